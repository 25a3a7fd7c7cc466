"""The numerics under the spatial MCA: attention over token sets, exact, without holding an N x N matrix.

What is here serves :mod:`skd_basicsr.distill.mca` and knows nothing of the paper's concepts:

* :func:`contracted_attention`: ``softmax(Q K^T * scale) V`` over (B, G, n, C) tokens, on fused
  :func:`torch.nn.functional.scaled_dot_product_attention` where a kernel that never materialises the n x n matrix
  takes the inputs (flash on CPU; flash or memory-efficient on CUDA), else on :func:`chunked_attention`;
* :func:`chunked_attention`: the same attention computed exactly a chunk of queries at a time, each chunk
  recomputed in backward, standing in for fused SDPA where no kernel takes the inputs;
* :class:`RowSoftmaxSpatialMCA`: ``S softmax(T^T S * scale, rows)``, an autograd function that keeps only S and T
  for backward and recomputes the row-softmax chunk by chunk;
* the option checks of these (``chunk_size``, the attention choice) and :func:`autograd_safe`.
"""
import numbers
from contextlib import nullcontext

import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

SPATIAL_ATTENTION = ('auto', 'chunked')
DEFAULT_CHUNK_SIZE = 256


def check_chunk_size(chunk_size):
    """Refuse a ``chunk_size`` that is not an integer >= 1 (bool excluded), with a ValueError naming it."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f'chunk_size={chunk_size!r} is not allowed: use an integer >= 1 (rows of the spatial '
                         'affinity computed at once by the \'rows\' reading and the chunked fallback).')


def check_spatial_attention(attention):
    """Refuse an attention choice outside :data:`SPATIAL_ATTENTION`, with a ValueError naming it."""
    if attention not in SPATIAL_ATTENTION:
        raise ValueError(f'spatial attention={attention!r} is not allowed: use one of {SPATIAL_ATTENTION} '
                         '(\'chunked\' forces the exact chunked computation that stands in for fused SDPA).')


def autograd_safe(t):
    """A tensor made under ``torch.inference_mode()`` cannot be saved for backward; a clone of it can.

    Args:
        t (Tensor): Any tensor.

    Returns:
        Tensor: ``t`` itself, or a clone of it where it is an inference tensor and grad mode is on.
    """
    return t.clone() if t.is_inference() and torch.is_grad_enabled() else t


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


def chunked_attention(q, k, v, scale, chunk):
    """Exact attention over the last two dims, ``chunk`` queries at a time, each chunk recomputed in backward.

    Stands in for fused SDPA where no fused kernel takes the inputs: every chunk is checkpointed, so no more than
    one (..., chunk, n) block of probabilities lives at once, in forward or in backward.

    Args:
        q (Tensor): Queries of shape (..., m, C).
        k (Tensor): Keys of shape (..., n, C).
        v (Tensor): Values of shape (..., n, D).
        scale (float): Factor of the logits ``q k^T`` before the softmax over the n keys.
        chunk (int): Queries computed at once, >= 1.

    Returns:
        Tensor: Of shape (..., m, D).
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


def contracted_attention(tokens_s, tokens_t, scale, attention, chunk):
    """The 'contracted' spatial MCA on (B, G, n, C) tokens (G groups: 1, or the windows), attention over each group.

    Query = value = the student tokens, key = the teacher tokens. Fused SDPA where it has a kernel for the inputs,
    else (or with ``attention='chunked'``) :func:`chunked_attention`.

    Args:
        tokens_s (Tensor): Student tokens of shape (B, G, n, C), the last dimension contiguous.
        tokens_t (Tensor): Teacher tokens of the same shape.
        scale (float): 1 / lambda.
        attention (str): 'auto' | 'chunked', see :data:`SPATIAL_ATTENTION`.
        chunk (int): Queries computed at once by the chunked form.

    Returns:
        Tensor: Of shape (B, G, n, C), each output token a convex combination of the student tokens of its group.
    """
    if attention == 'auto' and _fused_attention_available(tokens_s, tokens_t, tokens_s):
        with _flash_backends(tokens_s.device):
            return F.scaled_dot_product_attention(tokens_s, tokens_t, tokens_s, scale=scale)
    return chunked_attention(tokens_s, tokens_t, tokens_s, scale, chunk)


class RowSoftmaxSpatialMCA(torch.autograd.Function):
    """``S softmax(T^T S * scale, rows)`` on (B, C, N) tensors, ``chunk`` rows of the N x N affinity at a time.

    Forward keeps only S and T for backward; backward recomputes each chunk of the softmax. Working memory is
    about two (B, chunk, N) blocks. Not twice differentiable. Call it as ``RowSoftmaxSpatialMCA.apply(s, t,
    scale, chunk)``.

    Under autocast (``train.amp``) it computes in the dtype of its inputs (the wider of the two), as autocast's own
    products would for inputs of one dtype: its in-place accumulations need one dtype, which autocast, casting each
    product on its own, would not keep where student and teacher features differ in dtype.
    """

    @staticmethod
    def forward(ctx, s, t, scale, chunk):
        dtype = torch.promote_types(s.dtype, t.dtype)
        with torch.autocast(s.device.type, enabled=False):
            return RowSoftmaxSpatialMCA._forward(ctx, s.to(dtype), t.to(dtype), scale, chunk)

    @staticmethod
    def _forward(ctx, s, t, scale, chunk):
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
        with torch.autocast(s.device.type, enabled=False):
            return RowSoftmaxSpatialMCA._backward(ctx, s, t, grad_out.to(s.dtype))

    @staticmethod
    def _backward(ctx, s, t, grad_out):
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
