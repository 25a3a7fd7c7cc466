"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.models import training_ext

training_ext.install()
from skd_basicsr.models import skd_model  # noqa: F401,E402
