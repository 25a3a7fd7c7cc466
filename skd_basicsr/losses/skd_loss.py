"""Multi-dimensional Cross-net Attention (MCA) and the Gaussian-kernel feature loss L_GK of SKD.

After Zhang & Yan, "Soft Knowledge Distillation with Multi-Dimensional Cross-Net Attention for Image Restoration
Models Compression", ICASSP 2025 (arXiv 2501.09321). Per sample, a student feature S and a teacher feature T of
the same shape are seen as C x N matrices (N = H * W):

* channel branch: ``S_c = softmax(T S^T / lambda) S``, the C x C affinity normalised over the student channels;
* spatial branch: ``S_s = S softmax(T^T S / lambda)``, an N x N affinity;
* Gaussian kernel: ``GK(x, y) = 1 - exp(-d(x, y) / (2 sigma^2))`` with ``d`` the per-sample mean of squared
  differences (a plain sum over C * N elements drives exp to 0 and kills the gradient);
* ``L_GK = sum_i [GK(S, T) + alpha1 * (GK(S_c, T) + GK(S_s, T))]`` over the distilled levels i.

The paper leaves the normalised index of the spatial softmax open; two readings are offered:

* ``'contracted'`` (default): normalise over the index the product with S sums over, so every output token is a
  convex combination of student tokens. That is attention with query = S^T, key = T^T, value = S^T and runs on
  :func:`torch.nn.functional.scaled_dot_product_attention` without ever holding the N x N matrix.
* ``'rows'``: the literal row-wise softmax of ``T^T S / lambda``. Attention kernels cannot express it; it is
  computed in row chunks and recomputed chunk by chunk in backward.

Temperature lambda: the journal version reports 1e-6, which makes both softmaxes a near-hard arg-max whose
gradient is almost zero everywhere. Our default ``'auto'`` is the scaled-dot-product choice, the square root of the
contracted dimension (N for the channel affinity, C for the spatial one), picked for gradient health; it is to be
confirmed by the demo run. Any positive number can be given instead.
"""
import math
import numbers
from collections import OrderedDict
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from basicsr.utils.registry import LOSS_REGISTRY

BRANCHES = ('direct', 'channel', 'spatial')
SPATIAL_SOFTMAX_READINGS = ('contracted', 'rows')
REDUCTIONS = ('mean', 'sum')
DEFAULT_CHUNK_SIZE = 256


def _check_temperature(temperature):
    valid_number = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if temperature == 'auto' or (valid_number and math.isfinite(temperature) and temperature > 0):
        return
    hint = ''
    if isinstance(temperature, str):
        try:
            float(temperature)
            hint = f' YAML reads {temperature} as a string: write it with a dot (1.0e-6) or as !!float {temperature}.'
        except ValueError:
            pass
    raise ValueError(f'temperature={temperature!r} is not allowed: use \'auto\' (sqrt of the contracted dimension) '
                     f'or a finite number > 0 (the journal version reports 1e-6).{hint}')


def _resolve_temperature(temperature, contracted_dim):
    _check_temperature(temperature)
    return math.sqrt(contracted_dim) if temperature == 'auto' else float(temperature)


def _check_pair(s, t, what):
    if s.dim() != 4 or s.shape != t.shape:
        raise ValueError(f'{what} needs student and teacher features of one shape (B, C, H, W), got student '
                         f'{tuple(s.shape)} and teacher {tuple(t.shape)}.')


def _autograd_safe(t):
    """A tensor made under ``torch.inference_mode()`` cannot be saved for backward; a clone of it can."""
    return t.clone() if t.is_inference() and torch.is_grad_enabled() else t


def _check_chunk_size(chunk_size):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f'chunk_size={chunk_size!r} is not allowed: use an integer >= 1 (rows of the spatial '
                         'affinity computed at once by the \'rows\' reading).')


def mca_channel(s, t, temperature='auto'):
    """Channel branch of MCA: ``S_c = softmax(T S^T / lambda) S`` per sample.

    Args:
        s (Tensor): Student feature of shape (B, C, H, W).
        t (Tensor): Teacher feature of the same shape. It receives gradient only if it requires grad.
        temperature (float | str): lambda, a number > 0 or 'auto' for sqrt(H * W), the dimension the C x C
            affinity sums over. Default: 'auto'.

    Returns:
        Tensor: Of shape (B, C, H, W); channel i is a convex combination of the student channels, weighted by the
        affinity of teacher channel i to each of them (softmax over the student channels).
    """
    _check_pair(s, t, 'mca_channel')
    b, c, h, w = s.shape
    scale = 1.0 / _resolve_temperature(temperature, h * w)
    s_flat = s.reshape(b, c, h * w)
    t_flat = _autograd_safe(t).reshape(b, c, h * w)
    affinity = torch.softmax(torch.bmm(t_flat, s_flat.transpose(1, 2)) * scale, dim=-1)
    return torch.bmm(affinity, s_flat).reshape(b, c, h, w)


def _flash_backends(device):
    """Kernels that never materialise the N x N matrix; left to choose, SDPA on CPU falls back to the math one."""
    if device.type == 'cpu':
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    if device.type == 'cuda':
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
    return nullcontext()


class _RowSoftmaxSpatialMCA(torch.autograd.Function):
    """``S softmax(T^T S * scale, rows)`` on (B, C, N) tensors, ``chunk`` rows of the N x N affinity at a time.

    Forward keeps only S and T for backward; backward recomputes each chunk of the softmax.
    """

    @staticmethod
    def forward(ctx, s, t, scale, chunk):
        n = s.shape[-1]
        out = torch.zeros_like(s)
        t_scaled = t * scale  # scaling the (B, C, N) operand spares a pass over every (B, chunk, N) block
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            probs = torch.softmax(torch.bmm(t_scaled[:, :, rows].transpose(1, 2), s), dim=-1)
            out.baddbmm_(s[:, :, rows], probs)
        ctx.save_for_backward(s, t)
        ctx.scale, ctx.chunk = scale, chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        s, t = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        need_s, need_t = ctx.needs_input_grad[:2]
        n = s.shape[-1]
        grad_s = torch.zeros_like(s) if need_s else None
        grad_t = torch.zeros_like(t) if need_t else None
        t_scaled = t * scale
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            t_rows = t_scaled[:, :, rows]
            probs = torch.softmax(torch.bmm(t_rows.transpose(1, 2), s), dim=-1)
            if need_s:
                grad_s[:, :, rows] += torch.bmm(grad_out, probs.transpose(1, 2))
            # gradient w.r.t. the scaled logits: softmax backward in place, the row dot product as a batched
            # (1 x N)(N x 1) matmul, so that no third (B, chunk, N) block is allocated
            grad_logits = torch.bmm(s[:, :, rows].transpose(1, 2), grad_out)
            row_dot = torch.matmul(grad_logits.unsqueeze(-2), probs.unsqueeze(-1)).squeeze(-1)
            grad_logits.sub_(row_dot).mul_(probs)
            del probs
            if need_s:
                grad_s.baddbmm_(t_rows, grad_logits)
            if need_t:
                grad_t[:, :, rows] = torch.bmm(s, grad_logits.transpose(1, 2)).mul_(scale)
        return grad_s, grad_t, None, None


def mca_spatial(s, t, temperature='auto', softmax='contracted', chunk_size=DEFAULT_CHUNK_SIZE):
    """Spatial branch of MCA: ``S_s = S softmax(T^T S / lambda)`` per sample, with S, T as C x N (N = H * W).

    Neither reading ever holds the whole N x N affinity.

    * ``'contracted'``: the softmax normalises over the index the product with S sums over, so output token q is
      ``sum_p softmax_p(<T_p, S_q> / lambda) S_p``, a convex combination of student tokens. This is attention with
      query = S^T, key = T^T, value = S^T (tokens as rows), run on
      :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale = 1 / lambda``: forced to the flash
      kernel on CPU, flash or memory-efficient on CUDA (other devices: the backend SDPA picks). Memory
      O(B * N * C).
    * ``'rows'``: the literal row-wise softmax, ``P[p, q] = softmax_q(<T_p, S_q> / lambda)``, then ``S P``.
      Computed ``chunk_size`` rows of P at a time by a custom autograd function that saves only S and T and
      recomputes each chunk in backward. Working memory is about two (B, chunk_size, N) blocks (forward: logits
      and softmax; backward: softmax and its gradient) on top of the O(B * C * N) inputs, output and gradients,
      e.g. 8 x 256 x 16384 floats = 128 MiB per block at 128 x 128. Backward costs one extra affinity product
      per chunk. Not twice differentiable.

    Args:
        s (Tensor): Student feature of shape (B, C, H, W).
        t (Tensor): Teacher feature of the same shape. It receives gradient only if it requires grad.
        temperature (float | str): lambda, a number > 0 or 'auto' for sqrt(C), the dimension the N x N affinity
            sums over. Default: 'auto'.
        softmax (str): 'contracted' | 'rows', see above. Default: 'contracted'.
        chunk_size (int): Rows of the affinity computed at once by the 'rows' reading. Default: 256.

    Returns:
        Tensor: Of shape (B, C, H, W).
    """
    _check_pair(s, t, 'mca_spatial')
    if softmax not in SPATIAL_SOFTMAX_READINGS:
        raise ValueError(f'softmax={softmax!r} is not allowed: use one of {SPATIAL_SOFTMAX_READINGS}.')
    _check_chunk_size(chunk_size)
    b, c, h, w = s.shape
    scale = 1.0 / _resolve_temperature(temperature, c)
    t = _autograd_safe(t)
    if softmax == 'rows':
        out = _RowSoftmaxSpatialMCA.apply(s.reshape(b, c, h * w), t.reshape(b, c, h * w), scale, int(chunk_size))
        return out.reshape(b, c, h, w)
    # fused attention kernels need unit stride on the last (channel) dimension, hence the contiguous token rows
    tokens_s = s.reshape(b, c, h * w).transpose(1, 2).contiguous().unsqueeze(1)
    tokens_t = t.reshape(b, c, h * w).transpose(1, 2).contiguous().unsqueeze(1)
    with _flash_backends(s.device):
        out = F.scaled_dot_product_attention(tokens_s, tokens_t, tokens_s, scale=scale)
    return out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)


def gaussian_kernel_distance(x, y, sigma=1.0):
    """Gaussian-kernel distance per sample: ``1 - exp(-d / (2 sigma^2))``, d the mean of squared differences.

    Args:
        x (Tensor): Of shape (B, ...).
        y (Tensor): Of the same shape as x.
        sigma (float): Kernel bandwidth, > 0. Default: 1.0.

    Returns:
        Tensor: Of shape (B,), values in [0, 1).
    """
    if x.shape != y.shape:
        raise ValueError(f'gaussian_kernel_distance needs inputs of one shape, got {tuple(x.shape)} and '
                         f'{tuple(y.shape)}.')
    if not sigma > 0:
        raise ValueError(f'sigma={sigma!r} is not allowed: use a number > 0.')
    mean_sq = (x - y).pow(2).flatten(1).mean(dim=1)
    return -torch.expm1(-mean_sq / (2.0 * sigma**2))


@LOSS_REGISTRY.register()
class SKDFeatureLoss(nn.Module):
    """L_GK of SKD: Gaussian-kernel distances between student features, their MCA projections and teacher features.

    Per distilled level i, with S_c and S_s the channel and spatial MCA of S guided by T:
    ``w_i * [GK(S, T) + alpha1 * (GK(S_c, T) + GK(S_s, T))]`` (only the enabled branches), summed over the levels,
    reduced over the batch and multiplied by ``loss_weight`` (alpha2).

    Teacher features are detached inside, so the loss sends gradient through the student only, even when the
    caller hands over a teacher tensor that requires grad; tensors made under ``torch.inference_mode()`` are
    accepted too (cloned into ordinary tensors).

    Args:
        loss_weight (float): alpha2, the weight of L_GK in the total loss. Default: 1.0.
        reduction (str): Reduction over the batch: 'mean' | 'sum'. Default: 'mean'.
        mca_weight (float): alpha1, the weight of the two MCA branches. Default: 1.0.
        sigma (float): Gaussian kernel bandwidth, > 0. Default: 1.0.
        temperature (float | str): MCA softmax temperature lambda, a number > 0 or 'auto' (sqrt of the contracted
            dimension: H * W for the channel branch, C for the spatial one). The journal version reports 1e-6, a
            near-hard arg-max; 'auto' is our choice for gradient health, to be confirmed by the demo.
            Default: 'auto'.
        branches (list[str]): Enabled terms among 'direct', 'channel', 'spatial'. Default: all three.
        spatial_softmax (str): Reading of the spatial softmax, 'contracted' | 'rows' (see :func:`mca_spatial`).
            Default: 'contracted'.
        level_weights (list[float] | None): One weight per distilled level; None weighs every level 1.
            Default: None.
        chunk_size (int): Affinity rows computed at once by the 'rows' reading. Default: 256.
    """

    def __init__(self,
                 loss_weight=1.0,
                 reduction='mean',
                 mca_weight=1.0,
                 sigma=1.0,
                 temperature='auto',
                 branches=BRANCHES,
                 spatial_softmax='contracted',
                 level_weights=None,
                 chunk_size=DEFAULT_CHUNK_SIZE):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction={reduction!r} is not allowed: use one of {REDUCTIONS}.')
        if isinstance(branches, str):
            branches = [branches]
        branches = tuple(branches)
        if not branches:
            raise ValueError(f'branches={branches!r} is not allowed: enable at least one of {BRANCHES}.')
        for branch in branches:
            if branch not in BRANCHES:
                raise ValueError(f'branches: {branch!r} is not allowed: use any of {BRANCHES}.')
        if len(set(branches)) != len(branches):
            raise ValueError(f'branches={list(branches)!r} is not allowed: each of {BRANCHES} at most once.')
        if spatial_softmax not in SPATIAL_SOFTMAX_READINGS:
            raise ValueError(f'spatial_softmax={spatial_softmax!r} is not allowed: use one of '
                             f'{SPATIAL_SOFTMAX_READINGS}.')
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0:
            raise ValueError(f'sigma={sigma!r} is not allowed: use a number > 0.')
        _check_temperature(temperature)
        _check_chunk_size(chunk_size)
        if level_weights is not None:
            level_weights = list(level_weights)
            if not level_weights or not all(isinstance(v, numbers.Real) and v >= 0 for v in level_weights):
                raise ValueError(f'level_weights={level_weights!r} is not allowed: use None or a non-empty list '
                                 'of numbers >= 0, one per distilled level.')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.mca_weight = mca_weight
        self.sigma = sigma
        self.temperature = temperature
        self.branches = tuple(b for b in BRANCHES if b in branches)
        self.spatial_softmax = spatial_softmax
        self.level_weights = level_weights
        self.chunk_size = int(chunk_size)

    def extra_repr(self):
        return (f'loss_weight={self.loss_weight}, mca_weight={self.mca_weight}, sigma={self.sigma}, '
                f'temperature={self.temperature!r}, branches={self.branches}, '
                f'spatial_softmax={self.spatial_softmax!r}, reduction={self.reduction!r}')

    def _project(self, branch, s, t):
        if branch == 'channel':
            return mca_channel(s, t, self.temperature)
        if branch == 'spatial':
            return mca_spatial(s, t, self.temperature, self.spatial_softmax, self.chunk_size)
        return s

    def _reduce(self, per_sample, weight):
        if weight is None:
            return per_sample.mean() if self.reduction == 'mean' else per_sample.sum()
        weighted = (per_sample * weight).sum()
        return weighted / weight.sum() if self.reduction == 'mean' else weighted

    def forward(self, pred, target, weight=None):
        """
        Args:
            pred (list[Tensor] | Tensor): Student features, one (B, C, H, W) tensor per distilled level, already
                adapted to the teacher's channels.
            target (list[Tensor] | Tensor): Teacher features, same length and shapes.
            weight (Tensor, optional): Per-sample weights of shape (B,); with 'mean' the reduction is the
                weighted mean, as in BasicSR's weighted losses. Default: None.

        Returns:
            tuple[Tensor, OrderedDict[str, Tensor]]: The weighted scalar loss, and its detached parts
            'l_gk_direct', 'l_gk_channel', 'l_gk_spatial' (enabled branches only), which sum to it.
        """
        preds = [pred] if torch.is_tensor(pred) else list(pred)
        targets = [target] if torch.is_tensor(target) else list(target)
        if not preds or len(preds) != len(targets):
            raise ValueError(f'SKDFeatureLoss needs one teacher feature per student feature and at least one '
                             f'level, got {len(preds)} student and {len(targets)} teacher features.')
        level_weights = self.level_weights or [1.0] * len(preds)
        if len(level_weights) != len(preds):
            raise ValueError(f'level_weights has {len(level_weights)} entries but {len(preds)} levels are '
                             'distilled.')
        for i, (s, t) in enumerate(zip(preds, targets)):
            if s.dim() != 4 or s.shape != t.shape:
                raise ValueError(f'SKDFeatureLoss level {i}: student feature {tuple(s.shape)} and teacher feature '
                                 f'{tuple(t.shape)} must both be (B, C, H, W) of one shape (adapt the student '
                                 'channels first).')
        batch = preds[0].shape[0]
        if weight is not None and tuple(weight.shape) != (batch, ):
            raise ValueError(f'SKDFeatureLoss weight must have shape ({batch},) (one per sample), got '
                             f'{tuple(weight.shape)}.')

        terms = OrderedDict((branch, 0.0) for branch in self.branches)
        for s, t, level_weight in zip(preds, targets, level_weights):
            t = _autograd_safe(t.detach())
            for branch in self.branches:
                factor = self.loss_weight * level_weight * (1.0 if branch == 'direct' else self.mca_weight)
                distance = gaussian_kernel_distance(self._project(branch, s, t), t, self.sigma)
                terms[branch] = terms[branch] + factor * self._reduce(distance, weight)
        loss = sum(terms.values())
        parts = OrderedDict((f'l_gk_{branch}', term.detach()) for branch, term in terms.items())
        return loss, parts
