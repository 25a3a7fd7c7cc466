"""The cross-family regime's student with an initialisation that sees its input: :class:`StudySRVGGNetCompact`.

BasicSR's ``SRVGGNetCompact`` keeps PyTorch's default convolution initialisation (uniform, a third of the variance
that keeps a signal through a ReLU-like layer). Through its 13 convolutions and PReLUs the input's signal shrinks
about five-fold per layer, so at initialisation the body's output hardly depends on the input: on a 48 x 48 batch,
adding noise of std 0.1 to the input changes the body's output by 7e-7 on average (the output is its biases). The
network is the identity plus a constant, and training first has to build a path from the input, which on the study's
budget took 480-960 iterations on one seed and never finished on another (docs/kd_study.md, section 5.1).

This subclass re-initialises the convolutions with BasicSR's own ``default_init_weights`` (Kaiming normal, biases 0),
the last one scaled by 0.1 so that the network still starts close to the identity, as BasicSR's residual networks
scale their residual branches: the product's ``distill.student_init: kaiming``
(:func:`skd_basicsr.distill.student_init.kaiming_start`), bit for bit. The same input change then moves the body's
output by 1e-2. The modules, and so the
weights' keys and the feature names, are those of ``SRVGGNetCompact``: a trained student loads into the plain
``SRVGGNetCompact`` strictly.
"""
from basicsr.archs.srvgg_arch import SRVGGNetCompact
from basicsr.utils.registry import ARCH_REGISTRY

from skd_basicsr.distill.student_init import kaiming_start


@ARCH_REGISTRY.register()
class StudySRVGGNetCompact(SRVGGNetCompact):
    """``SRVGGNetCompact`` (same arguments) with BasicSR's Kaiming initialisation, the last convolution scaled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kaiming_start(self)
