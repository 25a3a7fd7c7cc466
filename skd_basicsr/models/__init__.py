"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.models import skd_model  # noqa: F401
