"""``python -m skd_basicsr.train -opt FILE [...]``: BasicSR's training pipeline with the plugin registered.

The same as ``basicsr train``; this form is what ``torchrun -m`` needs.
"""
import sys

import skd_basicsr  # noqa: F401  (compat + registries)
from basicsr.train import train_pipeline


def main(argv=None):
    """Train with BasicSR's own pipeline; experiments/ and tb_logger/ are created in the current directory."""
    from skd_basicsr.cli import run_pipeline
    return run_pipeline(train_pipeline, 'basicsr train', argv)


if __name__ == '__main__':
    sys.exit(main())
