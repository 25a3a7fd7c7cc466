"""Measurements of skd_basicsr, outside the package: the distillation study (:mod:`benchmarks.study`), the speed and
memory benches, and the GPU check. Run the scripts from the repository root (``python benchmarks/NAME.py``, or
``python -m benchmarks.NAME``); their results are committed beside them (RESULTS.md, docs/)."""
