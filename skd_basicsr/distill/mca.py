"""The paper's concepts: Multi-dimensional Cross-net Attention (MCA) and the Gaussian-kernel distance of SKD.

After Zhang & Yan, "Soft Knowledge Distillation with Multi-Dimensional Cross-Net Attention for Image Restoration
Models Compression", ICASSP 2025 (arXiv 2501.09321). Per sample, a student feature S and a teacher feature T of
the same shape are seen as C x N matrices (N = H * W):

* channel branch: ``S_c = softmax(T S^T / lambda) S``, the C x C affinity normalised over the student channels;
* spatial branch: ``S_s = S softmax(T^T S / lambda)``, an N x N affinity;
* Gaussian kernel: ``GK(x, y) = 1 - exp(-d(x, y) / (2 sigma^2))`` with ``d`` the per-sample mean of squared
  differences (a plain sum over C * N elements drives exp to 0 and kills the gradient);
* ``L_GK = sum_i [GK(S, T) + alpha1 * (GK(S_c, T) + GK(S_s, T))]`` over the distilled levels i
  (:class:`skd_basicsr.distill.skd_loss.SKDFeatureLoss`).

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

The attention numerics (fused SDPA, the chunked exact fallback, the row-softmax autograd function) live in
:mod:`skd_basicsr.distill.attention`; this module holds the forms and the checks of their arguments.

Mixed precision (``train.amp``). Under autocast the features, the affinity products and the attention come in bfloat16
or float16. Two steps compute in float32: the Gaussian kernel from the difference on, and the channel branch's C x C
softmax; the spatial branch does not. Measured on the CPU (2026-12, ``python benchmarks/amp_loss_precision.py``)
with the demo's teacher and a student selected
from it: 4 noisy 96 px crops, the 8 levels, the three branches (exact spatial). Each term and its gradient were
computed under autocast and in float32 on the same inputs (fp16 at the largest loss scale GradScaler would keep:
65536, halved until finite). Relative errors, value / gradient, for the student as selected and (after the arrow) for
the teacher's features plus 1%, a student close to its teacher:

* all in the autocast dtype, bf16: direct 3.9e-3 / 3.8e-3 -> 3.7e-3 / 2.3e-3, channel 2.0e-3 / 7.6e-3 -> 1.8e-3 /
  3.4e-3, spatial 5.6e-3 / 6.2e-3 -> 2.4e-3 / 7.2e-3. fp16: the direct term 1.8e-2 off for the close student (its
  squared differences fall below float16's normal range), and the gradients overflowed at the scale 65536;
* the kernel in float32: every value within 4e-4 (bf16) and 5e-5 (fp16), and fp16 keeps the scale 65536;
* the channel softmax in float32 too (one C x C matrix per sample, nothing next to the products): the channel
  gradient 6.9e-3 -> 4.1e-3 (bf16; 6.0e-3 -> 4.8e-3 at 128 px) and 7.7e-4 -> 5.1e-4 (fp16).

What stays (bf16: direct 2.4e-3, channel 4.1e-3, spatial 5.7e-3; fp16 at most 1.4e-3) is mostly the rounding of the
features themselves, which no float32 step after them undoes. The spatial branch in float32 would take its gradient
from 5.7e-3 to 1.7e-3, at the price of its N^2 attention, the costliest part of SKD, in float32: it stays in the
autocast dtype (SDPA accumulates its softmax in float32 anyway).
"""
import math
import numbers

import torch
from torch.nn import functional as F

from skd_basicsr.distill.attention import (DEFAULT_CHUNK_SIZE, RowSoftmaxSpatialMCA, autograd_safe, check_chunk_size,
                                           check_spatial_attention, contracted_attention)

SPATIAL_SOFTMAX_READINGS = ('contracted', 'rows')


# --------------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------------
def check_temperature(temperature):
    """Refuse a temperature that is neither 'auto' nor a finite number > 0, hinting at YAML's string reading.

    Args:
        temperature (float | str): The value to check.

    Raises:
        ValueError: Naming the value, and how to write 1e-6 in YAML where it came as a string.
    """
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


def resolve_temperature(temperature, contracted_dim):
    """lambda as a float: sqrt(contracted_dim) for 'auto', else the number given (checked by check_temperature)."""
    check_temperature(temperature)
    return math.sqrt(contracted_dim) if temperature == 'auto' else float(temperature)


def check_pair(s, t, what):
    """Refuse student and teacher features that are not (B, C, H, W) of one shape, naming ``what`` needs them."""
    if s.dim() != 4 or s.shape != t.shape:
        raise ValueError(f'{what} needs student and teacher features of one shape (B, C, H, W), got student '
                         f'{tuple(s.shape)} and teacher {tuple(t.shape)}.')


def is_form_size(value):
    """Whether ``value`` is a valid window side or token count of a cheap spatial form: an integer >= 2."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 2


def check_form_size(value, what):
    """Refuse a window side or token count that is not an integer >= 2, naming it ``what``."""
    if not is_form_size(value):
        raise ValueError(f'{what}={value!r} is not allowed: use an integer >= 2 (1 would make the spatial branch a '
                         'copy of the student).')


def _check_spatial_options(softmax, chunk_size, attention):
    if softmax not in SPATIAL_SOFTMAX_READINGS:
        raise ValueError(f'softmax={softmax!r} is not allowed: use one of {SPATIAL_SOFTMAX_READINGS}.')
    check_chunk_size(chunk_size)
    check_spatial_attention(attention)


# --------------------------------------------------------------------------------------------------------------
# MCA: channel branch, exact spatial branch
# --------------------------------------------------------------------------------------------------------------
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
    check_pair(s, t, 'mca_channel')
    b, c, h, w = s.shape
    s_flat = s.reshape(b, c, h * w)
    t_flat = autograd_safe(t).reshape(b, c, h * w)
    scale = 1.0 / resolve_temperature(temperature, h * w)
    logits = torch.bmm(t_flat, s_flat.transpose(1, 2))
    # the C x C softmax in float32 under autocast (train.amp): measured, see the module doc
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) * scale, dim=-1)
    return torch.bmm(probs.to(s_flat.dtype), s_flat).reshape(b, c, h, w)


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
    check_pair(s, t, 'mca_spatial')
    _check_spatial_options(softmax, chunk_size, attention)
    b, c, h, w = s.shape
    scale = 1.0 / resolve_temperature(temperature, c)
    t = autograd_safe(t)
    if softmax == 'rows':
        out = RowSoftmaxSpatialMCA.apply(s.reshape(b, c, h * w), t.reshape(b, c, h * w), scale, int(chunk_size))
        return out.reshape(b, c, h, w)
    # fused attention kernels need unit stride on the last (channel) dimension, hence the contiguous token rows
    tokens_s = s.reshape(b, c, h * w).transpose(1, 2).contiguous().unsqueeze(1)
    tokens_t = t.reshape(b, c, h * w).transpose(1, 2).contiguous().unsqueeze(1)
    out = contracted_attention(tokens_s, tokens_t, scale, attention, int(chunk_size))
    return out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------------------------
# cheap spatial forms: local windows, pooled tokens
# --------------------------------------------------------------------------------------------------------------
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
    check_pair(s, t, 'mca_spatial_window')
    check_form_size(window, 'window')
    _check_spatial_options(softmax, chunk_size, attention)
    b, c, h, w = s.shape
    scale = 1.0 / resolve_temperature(temperature, c)
    t = autograd_safe(t)
    bands = []
    for top, bottom, wh in _window_strips(h, window):
        pieces = []
        for left, right, ww in _window_strips(w, window):
            tokens_s = _to_windows(s[:, :, top:bottom, left:right], wh, ww)
            tokens_t = _to_windows(t[:, :, top:bottom, left:right], wh, ww)
            if softmax == 'rows':
                # the row-wise function works on (batch, C, n): one batch entry per window
                s_rows, t_rows = (x.flatten(0, 1).transpose(1, 2) for x in (tokens_s, tokens_t))
                out = RowSoftmaxSpatialMCA.apply(s_rows, t_rows, scale, int(chunk_size))
                out = out.transpose(1, 2).reshape(tokens_s.shape)
            else:
                out = contracted_attention(tokens_s, tokens_t, scale, attention, int(chunk_size))
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
    check_form_size(max_tokens, 'max_tokens')
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
    check_pair(s, t, 'mca_spatial_pooled')
    return mca_spatial(pool_tokens(s, max_tokens), pool_tokens(t, max_tokens), temperature, softmax, chunk_size,
                       attention)


# --------------------------------------------------------------------------------------------------------------
# Gaussian kernel
# --------------------------------------------------------------------------------------------------------------
def gaussian_kernel_distance(x, y, sigma=1.0):
    """Gaussian-kernel distance per sample: ``1 - exp(-d / (2 sigma^2))``, d the mean of squared differences.

    Args:
        x (Tensor): Of shape (B, ...).
        y (Tensor): Of the same shape as x.
        sigma (float): Kernel bandwidth, > 0. Default: 1.0.

    Returns:
        Tensor: Of shape (B,), values in [0, 1), float32 at least (x and y may be float16 or bfloat16 under autocast).
    """
    if x.shape != y.shape:
        raise ValueError(f'gaussian_kernel_distance needs inputs of one shape, got {tuple(x.shape)} and '
                         f'{tuple(y.shape)}.')
    if not sigma > 0:
        raise ValueError(f'sigma={sigma!r} is not allowed: use a number > 0.')
    diff = x - y
    # float32 from the difference on (train.amp): the squares of a student close to its teacher fall below float16's
    # normal range, and the kernel's value and its scaled gradient lose what GK measures; see the module doc
    mean_sq = diff.to(torch.promote_types(diff.dtype, torch.float32)).pow(2).flatten(1).mean(dim=1)
    return -torch.expm1(-mean_sq / (2.0 * sigma**2))
