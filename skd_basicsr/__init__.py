"""skd_basicsr: Soft Knowledge Distillation for BasicSR, as a plugin.

Importing this package makes the unmodified ``basicsr`` 1.4.2 work on current torch/torchvision/numpy
(:mod:`skd_basicsr.compat`) and fills BasicSR's registries with this package's architectures, datasets, losses
and models, the way BasicSR registers its own: by importing the ``*_arch.py``, ``*_dataset.py``, ``*_loss.py``
and ``*_model.py`` modules.
"""
from skd_basicsr import compat

compat.apply()

from skd_basicsr import archs, data, losses, models  # noqa: E402,F401  (registration by import)

__version__ = '0.1.0'
