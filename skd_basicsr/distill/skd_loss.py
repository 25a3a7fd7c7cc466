"""L_GK of SKD as a BasicSR loss: :class:`SKDFeatureLoss`, the wiring of the MCA forms and the Gaussian kernel.

After Zhang & Yan, ICASSP 2025: per distilled level i, ``GK(S, T) + alpha1 * (GK(S_c, T) + GK(S_s, T))``, summed
over the levels and weighed by alpha2, and a normalised form that the distillation study measured ahead of it
(``feature_norm='teacher_rms'``, ``level_reduction='mean'``). The concepts (the MCA branches and their cheap spatial
forms, the Gaussian kernel, the readings of the spatial softmax, the temperature) live in
:mod:`skd_basicsr.distill.mca`, the attention numerics under them in :mod:`skd_basicsr.distill.attention`. This
module holds the loss's options, their checks and the per-level choice of the spatial form.

The loss offers three hooks, :meth:`SKDFeatureLoss.normalise`, :meth:`SKDFeatureLoss.channel_projection` and
:meth:`SKDFeatureLoss.reduce_levels`; the distillation study overrides the channel projection
(``benchmarks/study/feature_loss.py``) to measure a candidate beyond the product.
"""
import numbers
from collections import OrderedDict

import torch
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY
from skd_basicsr.distill.attention import (DEFAULT_CHUNK_SIZE, autograd_safe, check_chunk_size, check_spatial_attention)
from skd_basicsr.distill.mca import (SPATIAL_SOFTMAX_READINGS, check_form_size, check_temperature,
                                     gaussian_kernel_distance, is_form_size, mca_channel, mca_spatial,
                                     mca_spatial_pooled, mca_spatial_window, pool_tokens)

BRANCHES = ('direct', 'channel', 'spatial')
REDUCTIONS = ('mean', 'sum')
FEATURE_NORMS = ('none', 'teacher_rms')
LEVEL_REDUCTIONS = ('sum', 'mean')
# added to the teacher's RMS so that an all-zero teacher feature does not divide by zero
RMS_EPS = 1e-6


def _check_per_level(value, name):
    """None, one integer >= 2 for every level, or a non-empty list of None / integers >= 2, one per level."""
    if not isinstance(value, (list, tuple)):
        if value is not None:
            check_form_size(value, name)
        return value
    if not value or not all(v is None or is_form_size(v) for v in value):
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
    ``w_i * [GK(S, T) + alpha1 * (GK(S_c, T) + GK(S_s, T))]`` (only the enabled branches), summed over the levels,
    reduced over the batch and multiplied by ``loss_weight`` (alpha2).

    Normalised form. The paper compares the features as they are and sums the terms, so one sigma serves levels
    whose features differ in scale by orders of magnitude, and the effective alpha2 grows with the number of levels
    and branches. ``feature_norm: teacher_rms`` divides both features of a level by the teacher feature's per-sample
    RMS first (sigma then means the same at every level), and ``level_reduction: mean`` averages the terms over the
    levels and branches. In the distillation study (docs/kd_study.md, section 5) this form, beside output-L1 on a
    student that starts from the teacher's weights, won at the rate tuned for the student trained alone where the
    student was cut in width only (+0.07 +- 0.02 dB over output-L1 alone at 600 iterations, +0.10 +- 0.04 dB at 3x
    the budget; at lr 1e-3 it had lost 0.10 +- 0.02 dB there). Where it was cut in depth it led on every seed but won
    only at 600 iterations (+0.12 +- 0.05 dB), not at 3x the budget (+0.04 +- 0.03 dB, 6 seeds), so the shipped
    files, whose students are cut in depth, leave it commented out. The defaults stay the paper's reading.

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
        feature_norm (str): 'none' | 'teacher_rms': at each level, divide both features by the teacher feature's
            per-sample RMS, ``sqrt(mean(T^2 over C, H, W)) + 1e-6`` (no gradient flows through it), before the
            branches and the distances. None (``~``, or ``none`` through ``--force_yml``) is 'none'.
            Default: 'none' (the paper's reading).
        level_reduction (str): 'sum' | 'mean': 'mean' divides the total (and each logged part) by the number of
            distilled levels times the number of enabled branches. Default: 'sum' (the paper's reading).

    Hooks. :meth:`normalise`, :meth:`channel_projection` and :meth:`reduce_levels` hold the options above; a
    subclass may override them to try other readings (the distillation study does, outside the product).
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
                 level_reduction='sum'):
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
        check_temperature(temperature)
        check_chunk_size(chunk_size)
        check_spatial_attention(spatial_attention)
        if feature_norm is None:  # BasicSR's --force_yml reads 'none' as None
            feature_norm = 'none'
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f'feature_norm={feature_norm!r} is not allowed: use one of {FEATURE_NORMS}.')
        if level_reduction not in LEVEL_REDUCTIONS:
            raise ValueError(f'level_reduction={level_reduction!r} is not allowed: use one of {LEVEL_REDUCTIONS}.')
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

    def extra_repr(self):
        return (f'loss_weight={self.loss_weight}, mca_weight={self.mca_weight}, sigma={self.sigma}, '
                f'temperature={self.temperature!r}, branches={self.branches}, '
                f'spatial_softmax={self.spatial_softmax!r}, reduction={self.reduction!r}, '
                f'spatial_window={self.spatial_window!r}, spatial_tokens={self.spatial_tokens!r}, '
                f'spatial_attention={self.spatial_attention!r}, feature_norm={self.feature_norm!r}, '
                f'level_reduction={self.level_reduction!r}')

    # ----------------------------------------------------------------------------------------------------------
    # hooks
    # ----------------------------------------------------------------------------------------------------------
    def normalise(self, s, t):
        """The features of one level as every branch and GK see them: as they are (the paper's reading), or both
        divided by the teacher's per-sample RMS with ``feature_norm='teacher_rms'``.

        Args:
            s (Tensor): Student feature of shape (B, C, H, W).
            t (Tensor): Teacher feature of the same shape, already detached.

        Returns:
            tuple[Tensor, Tensor]: The student and teacher features to compare.
        """
        if self.feature_norm == 'teacher_rms':
            rms = t.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + RMS_EPS
            s, t = s / rms, t / rms
        return s, t

    def channel_projection(self, s, t):
        """The channel branch's projection of s guided by t: :func:`mca_channel` with the loss's temperature.

        Args:
            s (Tensor): Student feature of shape (B, C, H, W), as :meth:`normalise` returned it.
            t (Tensor): Teacher feature of the same shape, likewise.

        Returns:
            Tensor: S_c, of the shape of s.
        """
        return mca_channel(s, t, self.temperature)

    def reduce_levels(self, terms, levels):
        """The terms per branch, each already summed over the levels: kept (the paper's reading), or divided by
        levels times enabled branches with ``level_reduction='mean'``.

        Args:
            terms (OrderedDict[str, Tensor]): Branch name -> its weighted term, summed over the levels.
            levels (int): The number of distilled levels fed.

        Returns:
            OrderedDict[str, Tensor]: The terms that make up the loss and its logged parts.
        """
        if self.level_reduction == 'mean':
            count = levels * len(self.branches)
            terms = OrderedDict((branch, term / count) for branch, term in terms.items())
        return terms

    def _project(self, branch, s, t, window, tokens):
        """The branch's projection of s and the teacher feature it is compared with."""
        if branch == 'channel':
            return self.channel_projection(s, t), t
        if branch == 'direct':
            return s, t
        spatial = (self.temperature, self.spatial_softmax, self.chunk_size, self.spatial_attention)
        if window is not None:
            return mca_spatial_window(s, t, window, *spatial), t
        if tokens is not None:
            return mca_spatial_pooled(s, t, tokens, *spatial), pool_tokens(t, tokens)
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
            s, t = self.normalise(s, autograd_safe(t.detach()))
            for branch in self.branches:
                factor = self.loss_weight * level_weight * (1.0 if branch == 'direct' else self.mca_weight)
                distance = gaussian_kernel_distance(*self._project(branch, s, t, window, max_tokens), self.sigma)
                terms[branch] = terms[branch] + factor * self._reduce(distance, weight)
        terms = self.reduce_levels(terms, len(preds))
        loss = sum(terms.values())
        parts = OrderedDict((f'l_gk_{branch}', term.detach()) for branch, term in terms.items())
        return loss, parts
