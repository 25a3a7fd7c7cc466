"""Importing this package registers its architectures in BasicSR's registry."""
from skd_basicsr.platform.archs.restormer_arch import Restormer  # noqa: F401

__all__ = ['Restormer']
