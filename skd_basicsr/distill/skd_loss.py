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

The exact spatial branch costs 2 B N^2 C MACs per level (forward; backward about twice that), more than the
networks themselves at full resolution. Two cheaper forms are offered beside it, per level:

* local, :func:`mca_spatial_window`: the same attention inside non-overlapping W x W windows, O(N W^2 C);
* pooled, :func:`mca_spatial_pooled`: the exact branch on features average-pooled to at most M tokens, compared
  with the equally pooled teacher feature, O(M^2 C) plus the O(N C) pooling.

Temperature lambda: the journal version reports 1e-6, which makes both softmaxes a near-hard arg-max whose
gradient is almost zero everywhere. Our default ``'auto'`` is the scaled-dot-product choice, the square root of the
contracted dimension (N for the channel affinity, C for the spatial one), picked for gradient health; it is to be
confirmed by the demo run. Any positive number can be given instead.

Three options of :class:`SKDFeatureLoss` are candidates of the distillation study (issue 10); their defaults are
the paper's reading, bit for bit: ``feature_norm='teacher_rms'`` divides both features of a level by the teacher's
per-sample RMS (sigma then means the same at every level), ``level_reduction='mean'`` averages the terms over levels
and branches instead of summing them, and ``channel_affinity='cosine'`` builds the channel affinity from
L2-normalised rows of S and T (logits in [-1, 1], as Restormer's MDTA normalises q and k; 'auto' is then 0.1 for
that branch, see :func:`mca_channel`).
"""
import math
import numbers
from collections import OrderedDict
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from basicsr.utils.registry import LOSS_REGISTRY

BRANCHES = ('direct', 'channel', 'spatial')
SPATIAL_SOFTMAX_READINGS = ('contracted', 'rows')
REDUCTIONS = ('mean', 'sum')
SPATIAL_ATTENTION = ('auto', 'chunked')
CHANNEL_AFFINITIES = ('raw', 'cosine')
FEATURE_NORMS = ('none', 'teacher_rms')
LEVEL_REDUCTIONS = ('sum', 'mean')
DEFAULT_CHUNK_SIZE = 256
# 'auto' temperature of the cosine channel affinity: logits in [-1, 1] become [-10, 10] (see mca_channel)
COSINE_AUTO_TEMPERATURE = 0.1
# added to the teacher's RMS so that an all-zero teacher feature does not divide by zero
RMS_EPS = 1e-6


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


def _check_channel_affinity(affinity, name='affinity'):
    if affinity not in CHANNEL_AFFINITIES:
        raise ValueError(f'{name}={affinity!r} is not allowed: use one of {CHANNEL_AFFINITIES} (\'raw\': the '
                         'paper\'s T S^T; \'cosine\': rows of S and T L2-normalised over H * W first).')


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
                         'affinity computed at once by the \'rows\' reading and the chunked fallback).')


def _check_spatial_attention(attention):
    if attention not in SPATIAL_ATTENTION:
        raise ValueError(f'spatial attention={attention!r} is not allowed: use one of {SPATIAL_ATTENTION} '
                         '(\'chunked\' forces the exact chunked computation that stands in for fused SDPA).')


def _check_spatial_options(softmax, chunk_size, attention):
    if softmax not in SPATIAL_SOFTMAX_READINGS:
        raise ValueError(f'softmax={softmax!r} is not allowed: use one of {SPATIAL_SOFTMAX_READINGS}.')
    _check_chunk_size(chunk_size)
    _check_spatial_attention(attention)


def _is_form_size(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 2


def _check_form_size(value, what):
    if not _is_form_size(value):
        raise ValueError(f'{what}={value!r} is not allowed: use an integer >= 2 (1 would make the spatial branch a '
                         'copy of the student).')


def mca_channel(s, t, temperature='auto', affinity='raw'):
    """Channel branch of MCA: ``S_c = softmax(T S^T / lambda) S`` per sample.

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
        affinity (str): 'raw' (the paper's ``T S^T``) | 'cosine' (rows L2-normalised first, see above).
            Default: 'raw'.

    Returns:
        Tensor: Of shape (B, C, H, W); channel i is a convex combination of the student channels, weighted by the
        affinity of teacher channel i to each of them (softmax over the student channels).
    """
    _check_pair(s, t, 'mca_channel')
    _check_channel_affinity(affinity)
    b, c, h, w = s.shape
    s_flat = s.reshape(b, c, h * w)
    t_flat = _autograd_safe(t).reshape(b, c, h * w)
    if affinity == 'cosine':
        _check_temperature(temperature)
        scale = 1.0 / (COSINE_AUTO_TEMPERATURE if temperature == 'auto' else float(temperature))
        logits = torch.bmm(F.normalize(t_flat, dim=-1), F.normalize(s_flat, dim=-1).transpose(1, 2))
    else:
        scale = 1.0 / _resolve_temperature(temperature, h * w)
        logits = torch.bmm(t_flat, s_flat.transpose(1, 2))
    return torch.bmm(torch.softmax(logits * scale, dim=-1), s_flat).reshape(b, c, h, w)


def _flash_backends(device):
    """Kernels that never materialise the N x N matrix; left to choose, SDPA on CPU falls back to the math one."""
    if device.type == 'cpu':
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    if device.type == 'cuda':
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
    return nullcontext()


def _fused_attention_available(q, k, v):
    """Whether a kernel that :func:`_flash_backends` allows accepts these (B, G, n, C) tokens (last dim contiguous).

    On other devices SDPA is left to choose, as before, so the answer there is yes.
    """
    if q.device.type == 'cpu':
        # the CPU flash kernel takes every floating dtype and head dimension once the last dim is contiguous
        return q.dtype.is_floating_point
    if q.device.type == 'cuda':
        cuda = torch.backends.cuda
        params = cuda.SDPAParams(q, k, v, None, 0.0, False, False)
        return cuda.can_use_flash_attention(params) or cuda.can_use_efficient_attention(params)
    return True


def _attend(q, k, v, scale):
    return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * scale, dim=-1), v)


def _chunked_attention(q, k, v, scale, chunk):
    """Exact attention over the last two dims, ``chunk`` queries at a time, each chunk recomputed in backward.

    Stands in for fused SDPA where no fused kernel takes the inputs: every chunk is checkpointed, so no more than
    one (..., chunk, n) block of probabilities lives at once, in forward or in backward.
    """
    recompute = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    outs = []
    for start in range(0, q.shape[-2], chunk):
        q_rows = q[..., start:start + chunk, :]
        if recompute:
            outs.append(checkpoint(_attend, q_rows, k, v, scale, use_reentrant=False, preserve_rng_state=False))
        else:
            outs.append(_attend(q_rows, k, v, scale))
    return torch.cat(outs, dim=-2)


def _contracted_attention(tokens_s, tokens_t, scale, attention, chunk):
    """The 'contracted' spatial MCA on (B, G, n, C) tokens (G groups: 1, or the windows), attention over each group.

    Fused SDPA where it has a kernel for the inputs, else (or with ``attention='chunked'``) the chunked exact form.
    """
    if attention == 'auto' and _fused_attention_available(tokens_s, tokens_t, tokens_s):
        with _flash_backends(tokens_s.device):
            return F.scaled_dot_product_attention(tokens_s, tokens_t, tokens_s, scale=scale)
    return _chunked_attention(tokens_s, tokens_t, tokens_s, scale, chunk)


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


def mca_spatial(s, t, temperature='auto', softmax='contracted', chunk_size=DEFAULT_CHUNK_SIZE, attention='auto'):
    """Spatial branch of MCA: ``S_s = S softmax(T^T S / lambda)`` per sample, with S, T as C x N (N = H * W).

    The exact global form: 2 B N^2 C MACs in forward, about twice that in backward. Use it where N is small (the
    low-resolution levels); at full resolution see :func:`mca_spatial_window` and :func:`mca_spatial_pooled`.
    Neither reading ever holds the whole N x N affinity.

    * ``'contracted'``: the softmax normalises over the index the product with S sums over, so output token q is
      ``sum_p softmax_p(<T_p, S_q> / lambda) S_p``, a convex combination of student tokens. This is attention with
      query = S^T, key = T^T, value = S^T (tokens as rows), run on
      :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale = 1 / lambda``: forced to the flash
      kernel on CPU, flash or memory-efficient on CUDA (other devices: the backend SDPA picks). Memory
      O(B * N * C). Where neither kernel takes the inputs (on CUDA: float64, head dimensions the kernels refuse),
      or with ``attention='chunked'``, the same attention is computed exactly ``chunk_size`` queries at a time,
      each chunk recomputed in backward: working memory about one (B, chunk_size, N) block, one extra affinity
      product per chunk in backward.
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
        chunk_size (int): Rows of the affinity computed at once by the 'rows' reading and by the chunked
            fallback of the 'contracted' one. Default: 256.
        attention (str): 'auto' (fused SDPA where it has a kernel for the inputs, the chunked exact computation
            elsewhere) | 'chunked' (always the chunked one; the 'rows' reading is chunked anyway). Default: 'auto'.

    Returns:
        Tensor: Of shape (B, C, H, W).
    """
    _check_pair(s, t, 'mca_spatial')
    _check_spatial_options(softmax, chunk_size, attention)
    b, c, h, w = s.shape
    scale = 1.0 / _resolve_temperature(temperature, c)
    t = _autograd_safe(t)
    if softmax == 'rows':
        out = _RowSoftmaxSpatialMCA.apply(s.reshape(b, c, h * w), t.reshape(b, c, h * w), scale, int(chunk_size))
        return out.reshape(b, c, h, w)
    # fused attention kernels need unit stride on the last (channel) dimension, hence the contiguous token rows
    tokens_s = s.reshape(b, c, h * w).transpose(1, 2).contiguous().unsqueeze(1)
    tokens_t = t.reshape(b, c, h * w).transpose(1, 2).contiguous().unsqueeze(1)
    out = _contracted_attention(tokens_s, tokens_t, scale, attention, int(chunk_size))
    return out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)


def _window_strips(size, window):
    """(start, stop, window side) strips tiling one side: whole windows, then the remainder as one shorter window."""
    whole = size // window * window
    strips = [(0, whole, window)] if whole else []
    if whole < size:
        strips.append((whole, size, size - whole))
    return strips


def _to_windows(x, wh, ww):
    """(B, C, h, w) with h, w multiples of wh, ww -> (B, G, wh * ww, C) contiguous tokens, G windows row-major."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // wh, wh, w // ww, ww).permute(0, 2, 4, 3, 5, 1)
    # with a single window the reshape is a view whose channel stride is not 1, which fused kernels refuse
    return x.reshape(b, (h // wh) * (w // ww), wh * ww, c).contiguous()


def _from_windows(tokens, h, w, wh, ww):
    """Inverse of :func:`_to_windows`."""
    b, c = tokens.shape[0], tokens.shape[-1]
    x = tokens.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


def mca_spatial_window(s,
                       t,
                       window,
                       temperature='auto',
                       softmax='contracted',
                       chunk_size=DEFAULT_CHUNK_SIZE,
                       attention='auto'):
    """Local spatial MCA: :func:`mca_spatial` inside each non-overlapping ``window`` x ``window`` window.

    Cost 2 B N W^2 C MACs in forward instead of 2 B N^2 C: linear in N, so it suits the full-resolution levels,
    where the global form costs more than the networks. Each output token mixes only the student tokens of its
    own window, so the branch keeps the local cross-net structure and gives up interactions beyond W.

    Windows tile the feature from the top-left corner. Where a side is not a multiple of ``window``, the last row
    (column) of windows is cut short to the remainder, without padding (a padded token would join the softmax);
    windows of one size are batched together (folded into SDPA's head dimension), so there are at most four
    attention calls. A window at least as large as both sides is the global form, to the last bit.

    Args:
        s (Tensor): Student feature of shape (B, C, H, W).
        t (Tensor): Teacher feature of the same shape. It receives gradient only if it requires grad.
        window (int): Window side W, >= 2.
        temperature (float | str): lambda, a number > 0 or 'auto' for sqrt(C). Default: 'auto'.
        softmax (str): 'contracted' | 'rows', the reading of :func:`mca_spatial`, applied per window.
            Default: 'contracted'.
        chunk_size (int): Rows of each window's affinity computed at once by the 'rows' reading and the chunked
            fallback. Default: 256.
        attention (str): 'auto' | 'chunked', as in :func:`mca_spatial`. Default: 'auto'.

    Returns:
        Tensor: Of shape (B, C, H, W).
    """
    _check_pair(s, t, 'mca_spatial_window')
    _check_form_size(window, 'window')
    _check_spatial_options(softmax, chunk_size, attention)
    b, c, h, w = s.shape
    scale = 1.0 / _resolve_temperature(temperature, c)
    t = _autograd_safe(t)
    bands = []
    for top, bottom, wh in _window_strips(h, window):
        pieces = []
        for left, right, ww in _window_strips(w, window):
            tokens_s = _to_windows(s[:, :, top:bottom, left:right], wh, ww)
            tokens_t = _to_windows(t[:, :, top:bottom, left:right], wh, ww)
            if softmax == 'rows':
                # the row-wise function works on (batch, C, n): one batch entry per window
                s_rows, t_rows = (x.flatten(0, 1).transpose(1, 2) for x in (tokens_s, tokens_t))
                out = _RowSoftmaxSpatialMCA.apply(s_rows, t_rows, scale, int(chunk_size))
                out = out.transpose(1, 2).reshape(tokens_s.shape)
            else:
                out = _contracted_attention(tokens_s, tokens_t, scale, attention, int(chunk_size))
            pieces.append(_from_windows(out, bottom - top, right - left, wh, ww))
        bands.append(torch.cat(pieces, dim=3))
    return torch.cat(bands, dim=2)


def pool_tokens(x, max_tokens):
    """Average-pool a (B, C, H, W) feature over k x k blocks, k the smallest factor leaving at most ``max_tokens``.

    Blocks tile from the top-left corner; where a side is not a multiple of k the last blocks are shorter and
    averaged over what they hold. With k = 1 (N <= max_tokens) the feature is returned as it is.

    Args:
        x (Tensor): Of shape (B, C, H, W).
        max_tokens (int): M, >= 2.

    Returns:
        Tensor: Of shape (B, C, ceil(H / k), ceil(W / k)), with ceil(H / k) * ceil(W / k) <= M.
    """
    _check_form_size(max_tokens, 'max_tokens')
    h, w = x.shape[-2:]
    # ceil(h / k) * ceil(w / k) >= h * w / k^2, so no k below sqrt(h * w / M) can do
    k = max(1, math.isqrt(h * w // max_tokens))
    while math.ceil(h / k) * math.ceil(w / k) > max_tokens:
        k += 1
    return x if k == 1 else F.avg_pool2d(x, k, k, ceil_mode=True)


def mca_spatial_pooled(s,
                       t,
                       max_tokens,
                       temperature='auto',
                       softmax='contracted',
                       chunk_size=DEFAULT_CHUNK_SIZE,
                       attention='auto'):
    """Pooled spatial MCA: :func:`mca_spatial` on student and teacher features pooled by :func:`pool_tokens`.

    Cost 2 B M^2 C MACs at most in forward, plus O(B N C) for the pooling, whatever the resolution. It keeps
    global interactions between k x k block averages and gives up detail finer than a block; compare its output
    with ``pool_tokens(t, max_tokens)``, not with ``t``. Where N <= M it is the global form.

    Args:
        s (Tensor): Student feature of shape (B, C, H, W).
        t (Tensor): Teacher feature of the same shape. It receives gradient only if it requires grad.
        max_tokens (int): M, the most tokens kept, >= 2.
        temperature (float | str): lambda, a number > 0 or 'auto' for sqrt(C). Default: 'auto'.
        softmax (str): 'contracted' | 'rows', as in :func:`mca_spatial`. Default: 'contracted'.
        chunk_size (int): As in :func:`mca_spatial`. Default: 256.
        attention (str): 'auto' | 'chunked', as in :func:`mca_spatial`. Default: 'auto'.

    Returns:
        Tensor: Of the shape of ``pool_tokens(s, max_tokens)``.
    """
    _check_pair(s, t, 'mca_spatial_pooled')
    return mca_spatial(pool_tokens(s, max_tokens), pool_tokens(t, max_tokens), temperature, softmax, chunk_size,
                       attention)


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


def _check_per_level(value, name):
    """None, one integer >= 2 for every level, or a non-empty list of None / integers >= 2, one per level."""
    if not isinstance(value, (list, tuple)):
        if value is not None:
            _check_form_size(value, name)
        return value
    if not value or not all(v is None or _is_form_size(v) for v in value):
        raise ValueError(f'{name}={list(value)!r} is not allowed: use None, an integer >= 2 for every level, or a '
                         'non-empty list with one entry per distilled level, each None (exact global form) or an '
                         'integer >= 2.')
    return list(value)


def _per_level(value, levels, name):
    if not isinstance(value, list):
        return [value] * levels
    if len(value) != levels:
        raise ValueError(f'{name} has {len(value)} entries but {levels} levels are distilled (give one entry per '
                         'level, None for the exact global form).')
    return value


def _check_one_form_per_level(window, tokens):
    lengths = {len(v) for v in (window, tokens) if isinstance(v, list)}
    if len(lengths) > 1:
        raise ValueError(f'spatial_window={window!r} and spatial_tokens={tokens!r} are lists of different lengths: '
                         'give both one entry per distilled level.')
    levels = lengths.pop() if lengths else 1
    pairs = zip(_per_level(window, levels, 'spatial_window'), _per_level(tokens, levels, 'spatial_tokens'))
    both = [i for i, (w, m) in enumerate(pairs) if w is not None and m is not None]
    if both:
        raise ValueError(f'spatial_window={window!r} and spatial_tokens={tokens!r} both choose a form at level(s) '
                         f'{both}: a level takes at most one cheap spatial form (None in the other option).')


@LOSS_REGISTRY.register()
class SKDFeatureLoss(nn.Module):
    """L_GK of SKD: Gaussian-kernel distances between student features, their MCA projections and teacher features.

    Per distilled level i, with S_c and S_s the channel and spatial MCA of S guided by T:
    ``w_i * [GK(S, T) + alpha1 * (GK(S_c, T) + GK(S_s, T))]`` (only the enabled branches), summed over the levels
    (or averaged, see ``level_reduction``), reduced over the batch and multiplied by ``loss_weight`` (alpha2).

    Teacher features are detached inside, so the loss sends gradient through the student only, even when the
    caller hands over a teacher tensor that requires grad; tensors made under ``torch.inference_mode()`` are
    accepted too (cloned into ordinary tensors).

    Spatial form per level. The exact global branch (:func:`mca_spatial`, 2 B N^2 C MACs) is the default and
    the right one at the small levels. At full resolution it costs more than the networks; there choose one cheap
    form per level:

    * ``spatial_window: W``: local MCA in W x W windows (:func:`mca_spatial_window`, 2 B N W^2 C MACs), which
      keeps the fine local structure of the cross-net affinity;
    * ``spatial_tokens: M``: MCA on features average-pooled to at most M tokens (:func:`mca_spatial_pooled`,
      at most 2 B M^2 C MACs), which keeps global interactions at block resolution; its GK compares with the
      equally pooled teacher feature.

    Each option takes one value for every level or a list with one entry per distilled level, ``None`` (``~`` in
    YAML) keeping the exact global form at that level, e.g. ``spatial_window: [8, 8, ~, ~]``. A level gets at
    most one cheap form. A window covering the whole feature, or M >= N, is the global form. The logged parts
    keep their names whatever the forms.

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
        chunk_size (int): Affinity rows computed at once by the 'rows' reading and by the chunked fallback.
            Default: 256.
        spatial_window (int | list[int | None] | None): Window side W (>= 2) of the local spatial form, for every
            level or per level. Default: None (global).
        spatial_tokens (int | list[int | None] | None): Most tokens M (>= 2) of the pooled spatial form, for every
            level or per level. Default: None (global).
        spatial_attention (str): 'auto' (fused SDPA where it has a kernel for the inputs, an exact chunked
            computation elsewhere, e.g. float64 on CUDA) | 'chunked' (always the chunked one: slower, for checks).
            Default: 'auto'.
        feature_norm (str): 'none' | 'teacher_rms': at each level, divide both S and T by the teacher feature's
            per-sample RMS, ``sqrt(mean(T^2 over C, H, W)) + 1e-6`` (no gradient flows through it), before the
            branches are computed, so that the MCA projections and the GK distances all see normalised features;
            GK's mean squared difference becomes relative to the teacher's scale and sigma means the same at
            every level. A study candidate of issue 10. Default: 'none' (the paper's reading).
        level_reduction (str): 'sum' | 'mean': 'mean' divides the total (and each logged part) by the number of
            distilled levels times the number of enabled branches, so the effective alpha2 no longer grows with
            them. A study candidate of issue 10. Default: 'sum' (the paper's reading).
        channel_affinity (str): 'raw' | 'cosine': the channel branch's affinity logits from S and T as they are,
            or from their channel rows L2-normalised over H * W (see :func:`mca_channel`; 'auto' temperature is
            then 0.1 for that branch). A study candidate of issue 10. Default: 'raw' (the paper's reading).
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
                 chunk_size=DEFAULT_CHUNK_SIZE,
                 spatial_window=None,
                 spatial_tokens=None,
                 spatial_attention='auto',
                 feature_norm='none',
                 level_reduction='sum',
                 channel_affinity='raw'):
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
        _check_spatial_attention(spatial_attention)
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f'feature_norm={feature_norm!r} is not allowed: use one of {FEATURE_NORMS}.')
        if level_reduction not in LEVEL_REDUCTIONS:
            raise ValueError(f'level_reduction={level_reduction!r} is not allowed: use one of {LEVEL_REDUCTIONS}.')
        _check_channel_affinity(channel_affinity, 'channel_affinity')
        spatial_window = _check_per_level(spatial_window, 'spatial_window')
        spatial_tokens = _check_per_level(spatial_tokens, 'spatial_tokens')
        _check_one_form_per_level(spatial_window, spatial_tokens)
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
        self.spatial_window = spatial_window
        self.spatial_tokens = spatial_tokens
        self.spatial_attention = spatial_attention
        self.feature_norm = feature_norm
        self.level_reduction = level_reduction
        self.channel_affinity = channel_affinity

    def extra_repr(self):
        return (f'loss_weight={self.loss_weight}, mca_weight={self.mca_weight}, sigma={self.sigma}, '
                f'temperature={self.temperature!r}, branches={self.branches}, '
                f'spatial_softmax={self.spatial_softmax!r}, reduction={self.reduction!r}, '
                f'spatial_window={self.spatial_window!r}, spatial_tokens={self.spatial_tokens!r}, '
                f'spatial_attention={self.spatial_attention!r}, feature_norm={self.feature_norm!r}, '
                f'level_reduction={self.level_reduction!r}, channel_affinity={self.channel_affinity!r}')

    def _project(self, branch, s, t, window, tokens):
        """The branch's projection of s and the teacher feature it is compared with."""
        if branch == 'channel':
            return mca_channel(s, t, self.temperature, self.channel_affinity), t
        if branch == 'direct':
            return s, t
        spatial = (self.temperature, self.spatial_softmax, self.chunk_size, self.spatial_attention)
        if window is not None:
            return mca_spatial_window(s, t, window, *spatial), t
        if tokens is not None:
            t_pooled = pool_tokens(t, tokens)
            return mca_spatial(pool_tokens(s, tokens), t_pooled, *spatial), t_pooled
        return mca_spatial(s, t, *spatial), t

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
        windows = _per_level(self.spatial_window, len(preds), 'spatial_window')
        tokens = _per_level(self.spatial_tokens, len(preds), 'spatial_tokens')
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
        for s, t, level_weight, window, max_tokens in zip(preds, targets, level_weights, windows, tokens):
            t = _autograd_safe(t.detach())
            if self.feature_norm == 'teacher_rms':
                rms = t.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + RMS_EPS
                s, t = s / rms, t / rms
            for branch in self.branches:
                factor = self.loss_weight * level_weight * (1.0 if branch == 'direct' else self.mca_weight)
                distance = gaussian_kernel_distance(*self._project(branch, s, t, window, max_tokens), self.sigma)
                terms[branch] = terms[branch] + factor * self._reduce(distance, weight)
        if self.level_reduction == 'mean':
            count = len(preds) * len(self.branches)
            terms = OrderedDict((branch, term / count) for branch, term in terms.items())
        loss = sum(terms.values())
        parts = OrderedDict((f'l_gk_{branch}', term.detach()) for branch, term in terms.items())
        return loss, parts
