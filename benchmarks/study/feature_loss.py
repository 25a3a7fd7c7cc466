"""L_GK with the study's channel-affinity candidate beyond the paper (issue 10): :class:`StudySKDFeatureLoss`.

Of the study's three candidates, two moved into the product's
:class:`skd_basicsr.distill.skd_loss.SKDFeatureLoss` when the depth regime measured them ahead of output-L1 alone
(issue 21): ``feature_norm='teacher_rms'`` and ``level_reduction='mean'``. This class still takes them (passed on to
the product's loss), so the study's option files keep their meaning. The third stays here, through the product's
hook :meth:`~SKDFeatureLoss.channel_projection`; its default is the paper's reading, bit for bit:

* ``channel_affinity='cosine'`` builds the channel affinity from L2-normalised rows of S and T (logits in [-1, 1],
  as Restormer's MDTA normalises q and k; 'auto' is then 0.1 for that branch, see :func:`mca_channel_affinity`).

Importing this module (``import benchmarks.study`` does) registers ``StudySKDFeatureLoss`` in BasicSR's
LOSS_REGISTRY, so that an option file's ``feature_opt: {type: StudySKDFeatureLoss, channel_affinity: cosine}``
builds it.
"""
import torch
from torch.nn import functional as F

from basicsr.utils.registry import LOSS_REGISTRY
from skd_basicsr.distill.attention import autograd_safe
from skd_basicsr.distill.mca import check_pair, check_temperature, mca_channel
from skd_basicsr.distill.skd_loss import SKDFeatureLoss

CHANNEL_AFFINITIES = ('raw', 'cosine')
# 'auto' temperature of the cosine channel affinity: logits in [-1, 1] become [-10, 10] (see mca_channel_affinity)
COSINE_AUTO_TEMPERATURE = 0.1


def check_channel_affinity(affinity, name='affinity'):
    """Refuse a channel affinity outside :data:`CHANNEL_AFFINITIES`, naming the option ``name``."""
    if affinity not in CHANNEL_AFFINITIES:
        raise ValueError(f'{name}={affinity!r} is not allowed: use one of {CHANNEL_AFFINITIES} (\'raw\': the '
                         'paper\'s T S^T; \'cosine\': rows of S and T L2-normalised over H * W first).')


def mca_channel_affinity(s, t, temperature='auto', affinity='raw'):
    """Channel branch of MCA with a choice of affinity: the paper's :func:`mca_channel`, or its cosine variant.

    With ``affinity='cosine'`` the logits are ``T' S'^T / lambda``, S' and T' being S and T with each channel row
    L2-normalised over the N = H * W positions (as Restormer's MDTA normalises q and k); the value the affinity
    multiplies is still the raw S. The logits are then cosines in [-1, 1], whatever the feature scale, so 'auto'
    resolves to 0.1 (logits in [-10, 10]) instead of sqrt(N): sqrt(N) is 16 already at 16 x 16 and would squeeze
    the logits into [-1/16, 1/16], a softmax indistinguishable from uniform (every output channel the mean of the
    student channels).

    Args:
        s (Tensor): Student feature of shape (B, C, H, W).
        t (Tensor): Teacher feature of the same shape. It receives gradient only if it requires grad.
        temperature (float | str): lambda, a number > 0 or 'auto': sqrt(H * W), the dimension the C x C affinity
            sums over, with the raw affinity; 0.1 with the cosine one. Default: 'auto'.
        affinity (str): 'raw' (the paper's ``T S^T``, exactly :func:`mca_channel`) | 'cosine' (rows
            L2-normalised first, see above). Default: 'raw'.

    Returns:
        Tensor: Of shape (B, C, H, W); channel i is a convex combination of the student channels, weighted by the
        affinity of teacher channel i to each of them (softmax over the student channels).
    """
    check_pair(s, t, 'mca_channel')
    check_channel_affinity(affinity)
    if affinity == 'raw':
        return mca_channel(s, t, temperature)
    b, c, h, w = s.shape
    s_flat = s.reshape(b, c, h * w)
    t_flat = autograd_safe(t).reshape(b, c, h * w)
    check_temperature(temperature)
    scale = 1.0 / (COSINE_AUTO_TEMPERATURE if temperature == 'auto' else float(temperature))
    logits = torch.bmm(F.normalize(t_flat, dim=-1), F.normalize(s_flat, dim=-1).transpose(1, 2))
    return torch.bmm(torch.softmax(logits * scale, dim=-1), s_flat).reshape(b, c, h, w)


@LOSS_REGISTRY.register()
class StudySKDFeatureLoss(SKDFeatureLoss):
    """:class:`SKDFeatureLoss` with the study's channel-affinity candidate of issue 10; its default is the paper's.

    Args:
        channel_affinity (str): 'raw' | 'cosine': the channel branch's affinity logits from S and T as they are,
            or from their channel rows L2-normalised over H * W (see :func:`mca_channel_affinity`; 'auto'
            temperature is then 0.1 for that branch). Default: 'raw' (the paper's reading).
        **options: Those of :class:`SKDFeatureLoss` (``feature_norm`` and ``level_reduction`` included), passed on
            as they are (by keyword, as BasicSR's build_loss gives them; the option check of SKDModel reads them
            from the base class).
    """

    def __init__(self, *, channel_affinity='raw', **options):
        super().__init__(**options)
        check_channel_affinity(channel_affinity, 'channel_affinity')
        self.channel_affinity = channel_affinity

    def extra_repr(self):
        return f'{super().extra_repr()}, channel_affinity={self.channel_affinity!r}'

    def channel_projection(self, s, t):
        """:func:`mca_channel_affinity` with the loss's temperature and ``channel_affinity``."""
        return mca_channel_affinity(s, t, self.temperature, self.channel_affinity)
