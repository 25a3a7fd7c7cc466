"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.models import checkpoint, training_ext

checkpoint.install()
training_ext.install()
from skd_basicsr.models import skd_model  # noqa: F401,E402
