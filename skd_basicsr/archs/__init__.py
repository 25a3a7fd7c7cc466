"""Importing this package registers its modules in BasicSR's registries."""
from skd_basicsr.archs.restormer_arch import Restormer  # noqa: F401

__all__ = ['Restormer', 'input_channels']

IN_CHANNEL_KEYS = ('inp_channels', 'in_channels', 'num_in_ch', 'in_nc')  # how BasicSR architectures name it


def input_channels(network_opt, default=3):
    """Input channels of a network from its BasicSR options (``network_g`` / ``network_t``)."""
    return next((network_opt[k] for k in IN_CHANNEL_KEYS if k in network_opt), default)
