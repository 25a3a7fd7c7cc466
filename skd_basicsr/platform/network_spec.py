"""What the code around a BasicSR network must know of it before running it, read once from its options.

:class:`NetworkSpec` answers the three questions that SKDModel, the feature taps, ``basicsr shrink``, validation,
``basicsr infer`` and ``basicsr export`` ask of ``network_g`` / ``network_t``: how many input channels it takes, which
multiple its input height and width must be (Restormer's three halvings, the window of a windowed transformer), and
what dummy input discovers its shapes. An option the file leaves out is read from the architecture's own default
(the signature of the class in BasicSR's registry), so SwinIR without ``window_size`` is known to need 7, not 1.
"""
import inspect
import math
from dataclasses import dataclass

import torch

from skd_basicsr.platform.archs.restormer_arch import PAD_MULTIPLE
from skd_basicsr.platform.errors import OptionError

# how BasicSR's architectures name their input channels (Restormer, SwinIR / HAT, EDSR / RRDBNet, the older nets)
IN_CHANNEL_KEYS = ('inp_channels', 'in_chans', 'num_in_ch', 'in_channels', 'in_nc')
DEFAULT_IN_CHANNELS = 3  # colour, where neither the options nor the architecture's signature say
WINDOW_KEY = 'window_size'
# multiples that no option states: Restormer halves its input three times
FIXED_MULTIPLES = {'Restormer': PAD_MULTIPLE}
PROBE_SIDE = 64  # the dummy input's side is the first multiple of the size multiple that is at least this


def arch_defaults(net_type):
    """The architecture's keyword defaults from its class in BasicSR's registry ({} when it is not registered)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    try:
        cls = ARCH_REGISTRY.get(net_type)
    except KeyError:
        return {}
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class NetworkSpec:
    """A network's input channels and size multiple, from its BasicSR options.

    Attributes:
        type (str): The architecture's registered name.
        in_channels (int): Channels of its input.
        size_multiple (int): The multiple its input height and width must be (1: any size).
    """
    type: str
    in_channels: int
    size_multiple: int

    @classmethod
    def from_options(cls, net_opt, where='network_g'):
        """Read the spec of ``net_opt`` (``network_g`` / ``network_t`` of an option file).

        Raises:
            OptionError: When ``net_opt`` has no type, or names input channels that are not a positive integer.
        """
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise OptionError(f'{where}: expected a mapping with a `type`, got {net_opt!r}.')
        known = dict(arch_defaults(net_opt['type']), **net_opt)
        channels = next((known[k] for k in IN_CHANNEL_KEYS if k in known), DEFAULT_IN_CHANNELS)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise OptionError(f'{where} ({net_opt["type"]}): input channels {channels!r} are not an integer >= 1.')
        multiple = FIXED_MULTIPLES.get(net_opt['type']) or int(known.get(WINDOW_KEY) or 1)
        return cls(net_opt['type'], int(channels), multiple)

    def probe_side(self, *others):
        """Side of the square dummy input that discovers feature shapes: the first multiple of this network's size
        multiple (and of those of ``others``, networks run on the same input) that is at least 64."""
        multiple = math.lcm(self.size_multiple, *(other.size_multiple for other in others))
        return -(-PROBE_SIDE // multiple) * multiple

    def probe(self, device=None, *others):
        """A zero (1, in_channels, side, side) input, side :meth:`probe_side` (``others``: see there)."""
        side = self.probe_side(*others)
        return torch.zeros(1, self.in_channels, side, side, device=device)


def pad_to_multiple(img, multiple):
    """Pad an NCHW tensor at the bottom and right to the next multiple of ``multiple``.

    Reflection keeps the border statistics natural for a restoration network; an image smaller than the padding
    (reflection cannot reach that far) is padded by replication instead.

    Returns:
        tuple[Tensor, tuple[int, int]]: the padded tensor and the original (height, width).
    """
    from torch.nn import functional as F

    h, w = img.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return img, (h, w)
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(img, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_output(out, size, padded_width):
    """Crop a network's output on a padded input back to the input's ``size`` (h, w) times the network's scale."""
    scale = out.shape[-1] // padded_width
    return out[..., :size[0] * scale, :size[1] * scale]


def forward_padded(fn, img, multiple):
    """``fn`` (a network) on ``img`` padded to ``multiple`` (:func:`pad_to_multiple`), its output cropped back."""
    padded, size = pad_to_multiple(img, multiple)
    return crop_output(fn(padded), size, padded.shape[-1])
