"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.platform.data.gaussian_denoise_dataset import GaussianDenoiseDataset  # noqa: F401
from skd_basicsr.platform.data.padded_paired_dataset import PaddedPairedImageDataset  # noqa: F401

__all__ = ['GaussianDenoiseDataset', 'PaddedPairedImageDataset']
