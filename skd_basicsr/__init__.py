"""skd_basicsr: Soft Knowledge Distillation for BasicSR, as a plugin.

Importing this package makes the unmodified ``basicsr`` 1.4.2 work on current torch/torchvision/numpy and gives it
this package's training and checkpoint behaviour (:mod:`skd_basicsr.patches`, the one list of changes), then fills
BasicSR's registries with this package's architectures, datasets, losses and models, the way BasicSR registers its
own: by importing the ``*_arch.py``, ``*_dataset.py``, ``*_loss.py`` and ``*_model.py`` modules.
"""
from skd_basicsr import patches

patches.apply()

from skd_basicsr import archs, data, losses, models  # noqa: E402,F401  (registration by import)

__version__ = '0.1.0'
