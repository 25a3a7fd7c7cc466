"""``python -m benchmarks.study.train -opt FILE [...]``: ``basicsr train`` with the study's types registered.

The same flags as ``basicsr train``; the option files of the study name ``StudySKDModel``, ``StudySKDFeatureLoss`` and
``StudySKDContrastiveLoss``, which only exist in a process that has imported :mod:`benchmarks.study`.
"""
import sys

import benchmarks.study  # noqa: F401  (registers the study's loss and model types)
from skd_basicsr.train import main

if __name__ == '__main__':
    sys.exit(main())
