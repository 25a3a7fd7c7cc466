"""The distillation study: the variants it trains and the loss and model options only it sets.

The product (:mod:`skd_basicsr.distill`) keeps the paper's method and what the recommendation uses. The candidates
the study measured beyond them, and found to add nothing on top of the recommended start, live here and register
themselves in BasicSR's registries under their own names when this package is imported.
"""
import skd_basicsr  # noqa: F401  (BasicSR made fit for today's libraries, before anything imports it)
from benchmarks.study import contrastive_loss, model  # noqa: F401  (register StudySKDContrastiveLoss, StudySKDModel)
from benchmarks.study import archs  # noqa: F401  (registers StudySRVGGNetCompact)
from benchmarks.study import feature_loss  # noqa: F401  (registers StudySKDFeatureLoss)
