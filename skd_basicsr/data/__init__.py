"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.data import preflight
from skd_basicsr.data.gaussian_denoise_dataset import GaussianDenoiseDataset  # noqa: F401

preflight.install()

__all__ = ['GaussianDenoiseDataset']
