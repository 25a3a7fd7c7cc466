"""skd_basicsr: Soft Knowledge Distillation for BasicSR, as a plugin.

Three homes, named by what they serve; dependencies run one way (deploy and distill use the platform, never the
reverse):

* :mod:`skd_basicsr.distill`, the product: the paper's method (MCA, the Gaussian-kernel distance, L_GK, L_CL), the
  feature taps and adapters, weight selection, and SKDModel;
* :mod:`skd_basicsr.platform`, what every BasicSR model gets: BasicSR 1.4.2 made to run on current
  torch/torchvision/numpy, safe options, atomic checkpoints, optimisers, schedulers, progressive patches, mixing,
  gradient accumulation, padded validation, dataset checks, the Restormer architecture and the datasets BasicSR
  lacks; it knows nothing of distillation;
* :mod:`skd_basicsr.deploy`: image I/O, tiled inference, ONNX, the network a deploy command runs.

Importing this package applies the platform's changes to BasicSR (:mod:`skd_basicsr.platform.patches`, the one list
of them), then fills BasicSR's registries the way BasicSR fills its own: by importing the ``*_arch.py``,
``*_dataset.py``, ``*_loss.py`` and ``*_model.py`` modules. ``basicsr``'s subcommands live in :mod:`skd_basicsr.tools`.
"""
from skd_basicsr.platform import patches

patches.apply()

from skd_basicsr.platform import archs, data  # noqa: E402,F401  (registration by import)
from skd_basicsr import distill  # noqa: E402,F401  (registration by import)

__version__ = '0.1.0'
