"""A random start that sees its input: ``distill.student_init: kaiming``.

Some of BasicSR's plain CNNs keep PyTorch's default convolution initialisation (uniform, a third of the variance that
keeps a signal through a ReLU-like layer). ``SRVGGNetCompact`` is one: through its 13 convolutions and PReLUs the
input's signal shrinks about five-fold per layer, so at initialisation its body's output hardly depends on the input
(on a 48 x 48 batch, input noise of std 0.1 moves it by 7e-7: it is its biases), and the network is the identity plus
a constant. In the distillation study (docs/kd_study.md, section 5.1) such a student trained alone reached 30.50,
23.17 and 27.84 dB on three seeds: training first had to build a path from the input, and on one seed never did.

``kaiming`` re-initialises every convolution with BasicSR's own ``default_init_weights`` (Kaiming normal, biases 0)
and scales the last one the network registers (its output layer in BasicSR's plain networks) by 0.1, so that a
residual network still starts close to the identity, as BasicSR scales its residual branches. The same input change
then moves ``SRVGGNetCompact``'s body by 1e-2, and the study's three seeds train within 0.21 dB of each other. This is
the start that the study measured for a student of another family than its teacher; ``basicsr distill`` writes it for
such a student. Other layers (linear, normalisation, attention) keep their own initialisation.
"""
import torch
from torch import distributed as dist
from torch import nn

from skd_basicsr.platform.errors import OptionError

STUDENT_INITS = ('default', 'kaiming')
LAST_CONV_SCALE = 0.1


def kaiming_start(net, last_conv_scale=LAST_CONV_SCALE):
    """Re-initialise ``net``'s convolutions in place: Kaiming normal, biases 0, the last registered one scaled by
    ``last_conv_scale``. Draws from torch's global generator, so a seeded run is reproducible.

    Raises:
        OptionError: ``net`` has no convolution.
    """
    from basicsr.archs.arch_util import default_init_weights

    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise OptionError(f'distill.student_init: kaiming re-initialises convolutions, and {type(net).__name__} '
                          'has none; use student_init: default.')
    default_init_weights(convs[:-1], 1)
    default_init_weights(convs[-1], last_conv_scale)


def same_on_every_rank(net):
    """Give every process rank 0's weights: BasicSR seeds each rank with ``manual_seed + rank``, so a random
    re-initialisation after the network was wrapped in DDP differs between ranks, and DDP does not broadcast again."""
    if dist.is_available() and dist.is_initialized():
        with torch.no_grad():
            for tensor in net.state_dict().values():
                dist.broadcast(tensor, src=0)
