"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.archs.restormer_arch import Restormer  # noqa: F401

__all__ = ['Restormer']
