"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.losses.skd_loss import SKDFeatureLoss, gaussian_kernel_distance, mca_channel, mca_spatial  # noqa: F401
from skd_basicsr.losses.contrastive_loss import SKDContrastiveLoss  # noqa: F401
