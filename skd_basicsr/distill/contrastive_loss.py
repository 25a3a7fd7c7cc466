"""L_CL: the image-level contrastive loss that replaces the usual L1/KL between student and teacher outputs."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from skd_basicsr.distill.feature_space import FEATURE_SPACES, VGG19FeatureSpace

POSITIVES = ('teacher', 'gt', 'both')
REDUCTIONS = ('mean', 'sum')


@LOSS_REGISTRY.register()
class SKDContrastiveLoss(nn.Module):
    """Image-level contrastive loss in a frozen feature space, ratio form.

    For each feature layer k with weight w_k and L1 distance d (mean over the feature map, per sample)::

        L_CL = sum_k w_k * d(phi_k(anchor), phi_k(positive)) / (d(phi_k(anchor), phi_k(negative)) + eps)

    anchor = the student's output, positive = the teacher's output (or the ground truth, or the mean distance to
    both), negative = the degraded input. Pulling the student towards the teacher and pushing it away from the
    degraded input replaces the usual L1 between the two outputs. With several negatives the denominator is the
    mean of their distances.

    A negative that is about the positive is no negative: in blind denoising the input tends to the clean image as
    the noise level goes to 0, the denominator vanishes with the numerator, and the gradient grows like 1 / sigma
    (benchmarks/cl_negatives.py measures it). Per sample and layer, a negative whose distance to the positive is
    below ``negative_margin`` times the positive's mean absolute feature is left out of the denominator; a sample
    left with no negative adds nothing at that layer.

    An anchor about a negative is the other degenerate case: a student that starts at its input (a plain CNN, before
    it learns to denoise) sits on the input negative, and the ratio is about ``d_pos / eps``. ``negative_floor``
    raises each negative distance to at least that fraction of the positive's own distance to the negative (detached),
    so while the student is that close to the negative the term only pulls it to the positive, at a bounded scale.

    Called on images (:meth:`forward`), the loss maps them into its feature space itself. SKDModel runs the
    feature-space passes where its iteration lists them and calls :meth:`from_features`.

    Args:
        loss_weight (float): alpha3, weight of L_CL in the total loss. Default: 1.0.
        reduction (str): Over the batch: 'mean' | 'sum'. Default: 'mean'.
        feature_space (str | object): 'vgg19' (built here, see
            :class:`~skd_basicsr.distill.feature_space.VGG19FeatureSpace`), or a feature space object such as the
            :class:`~skd_basicsr.distill.feature_space.TeacherFeatureSpace` SKDModel builds for
            ``feature_space: teacher``. Default: 'vgg19' (under SKDModel, whose option files may leave it out,
            'teacher').
        positive (str): 'teacher' | 'gt' | 'both'. Default: 'teacher'.
        layer_weights (dict | None): {layer: weight} of the 'vgg19' space. Default: None (its defaults).
        vgg_weights (str | None): Path of a VGG19 state_dict for the 'vgg19' space. Default: None.
        eps (float): Keeps the ratio finite when anchor and negative coincide. Default: 1e-7.
        negative_margin (float): Negatives closer to the positive than this, relative to the positive's mean absolute
            feature (per sample and layer), are left out; 0 keeps every negative, as the paper does. Default: 0.05.
        negative_floor (float): In [0, 1): each distance of the anchor to a negative is at least this fraction of the
            positive's distance to that negative (per sample and layer); 0 is the paper's ratio. Default: 0.
    """

    negatives = ('input', )  # where the negatives come from: SKDModel makes them (SKDModel.contrast_negatives)

    def __init__(self, loss_weight=1.0, reduction='mean', feature_space='vgg19', positive='teacher',
                 layer_weights=None, vgg_weights=None, eps=1e-7, negative_margin=0.05, negative_floor=0.0):
        super().__init__()
        if isinstance(feature_space, str) and feature_space not in FEATURE_SPACES:
            raise ValueError(f'SKDContrastiveLoss: feature_space {feature_space!r} is not one of {FEATURE_SPACES}.')
        if feature_space == 'teacher':
            raise ValueError('SKDContrastiveLoss: feature_space teacher needs the teacher network; SKDModel builds '
                             'that space. Outside SKDModel, pass a TeacherFeatureSpace object.')
        if positive not in POSITIVES:
            raise ValueError(f'SKDContrastiveLoss: positive {positive!r} is not one of {POSITIVES}.')
        if reduction not in REDUCTIONS:
            raise ValueError(f'SKDContrastiveLoss: reduction {reduction!r} is not one of {REDUCTIONS}.')
        if eps <= 0:
            raise ValueError(f'SKDContrastiveLoss: eps must be > 0, got {eps}.')
        if isinstance(negative_margin, bool) or not isinstance(negative_margin, (int, float)) or negative_margin < 0:
            raise ValueError(f'SKDContrastiveLoss: negative_margin must be a number >= 0, got {negative_margin!r}.')
        if isinstance(negative_floor, bool) or not isinstance(negative_floor, (int, float)) or \
                not 0 <= negative_floor < 1:
            raise ValueError(f'SKDContrastiveLoss: negative_floor must be a number in [0, 1), got {negative_floor!r}.')
        self.space = VGG19FeatureSpace(layer_weights, vgg_weights) if feature_space == 'vgg19' else feature_space
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.positive = positive
        self.eps = eps
        self.negative_margin = float(negative_margin)
        self.negative_floor = float(negative_floor)

    def positives(self, target, gt=None):
        """The positive images: the teacher's output ``target``, the ground truth ``gt``, or both."""
        positives = {'teacher': [target], 'gt': [gt], 'both': [target, gt]}[self.positive]
        if any(img is None for img in positives):
            raise ValueError(f'SKDContrastiveLoss: positive {self.positive!r} needs the ground truth (gt).')
        return positives

    def forward(self, pred, target, negative, gt=None, negative_feats=None):
        """
        Args:
            pred (Tensor): Anchor, the student's output (B, C, H, W); gradient flows back through it.
            target (Tensor): The teacher's output, the positive unless ``positive`` is 'gt'; no gradient.
            negative (Tensor | list[Tensor]): The negative(s) at the output's size (for super-resolution the input
                is upsampled); no gradient.
            gt (Tensor | None): The ground truth, needed when ``positive`` is 'gt' or 'both'. Default: None.
            negative_feats (dict | list[dict | None] | None): Features of each negative already computed, to avoid
                a second pass; None where they are not known. Default: None.

        Returns:
            Tensor: loss_weight * L_CL.
        """
        positives = self.positives(target, gt)
        negatives = [negative] if torch.is_tensor(negative) else list(negative)
        if negative_feats is None or isinstance(negative_feats, dict):
            negative_feats = [negative_feats] + [None] * (len(negatives) - 1)
        if not negatives or len(negative_feats) != len(negatives):
            raise ValueError(f'SKDContrastiveLoss: {len(negatives)} negative(s) but {len(negative_feats)} entries '
                             'of negative_feats; give one per negative (None where not known).')
        for img in positives + negatives:
            if img.shape != pred.shape:
                raise ValueError(f'SKDContrastiveLoss: anchor shape {tuple(pred.shape)} differs from a '
                                 f'positive/negative of shape {tuple(img.shape)}.')
        anchor_feats = self.space(pred)
        with torch.no_grad():
            pos_feats = [self.space(img) for img in positives]
            neg_feats = [self.space(img) if feats is None else feats for img, feats in zip(negatives, negative_feats)]
        return self.from_features(anchor_feats, pos_feats, neg_feats)

    def from_features(self, anchor_feats, pos_feats, neg_feats):
        """loss_weight * L_CL from features already in the space: ``{layer: feature}`` of the anchor (with
        gradient), and lists of them for the positives and the negatives (without)."""
        loss = 0
        for layer, weight in self.space.layer_weights.items():
            anchor = anchor_feats[layer]
            positives = [feats[layer] for feats in pos_feats]
            d_pos = sum(l1_per_sample(anchor, p) for p in positives) / len(positives)
            kept = [self.kept(positives, feats[layer]) for feats in neg_feats]
            d_neg = sum(keep * self.floored(self.negative_distance(anchor, positives, feats[layer]), positives,
                                            feats[layer]) for keep, feats in zip(kept, neg_feats))
            count = sum(kept)
            # a sample without a negative left: 0 / 1 instead of 0 / 0, so it adds nothing and sends no gradient
            loss = loss + weight * torch.where(count > 0, d_pos, 0) / (d_neg / count.clamp(min=1) + self.eps)
        loss = loss.mean() if self.reduction == 'mean' else loss.sum()
        return self.loss_weight * loss

    def kept(self, positives, negative):
        """1 per sample whose ``negative`` is far enough from the positives to count (``negative_margin``), else 0."""
        with torch.no_grad():
            if self.negative_margin == 0:
                return negative.new_ones(negative.shape[0])
            scale = sum(p.abs().flatten(1).mean(1) for p in positives) / len(positives)
            return (positive_distance(positives, negative) > self.negative_margin * scale).to(negative.dtype)

    def floored(self, distance, positives, negative):
        """``distance`` (per sample, of the anchor to ``negative``) raised to ``negative_floor`` times the positives'
        distance to ``negative``; the floor carries no gradient."""
        if self.negative_floor == 0:
            return distance
        with torch.no_grad():
            floor = self.negative_floor * positive_distance(positives, negative)
        return torch.maximum(distance, floor.to(distance.dtype))

    def negative_distance(self, anchor, positives, negative):
        """Per-sample distance of the anchor to one negative at one layer (``positives``: that layer's positive
        features, for variants that bound the distance by them)."""
        return l1_per_sample(anchor, negative)


def positive_distance(positives, negative):
    """Per-sample distance of ``negative`` to the positives (their mean), without gradient."""
    with torch.no_grad():
        return sum(l1_per_sample(p, negative) for p in positives) / len(positives)


def l1_per_sample(x, y):
    """Mean absolute difference per sample: (B, ...) -> (B,), summed and returned in float32 at least.

    Under autocast (``train.amp``) the features come in bfloat16 or float16; a distance rounded to them carried L_CL's
    ratio off by 9e-4 (bf16) and its gradient by 4.0e-3, against 2e-6 and 2.8e-3 with the sum in float32, at the
    demo's feature scales (see :mod:`skd_basicsr.distill.mca`).
    """
    return (x - y).abs().flatten(1).mean(1, dtype=torch.promote_types(x.dtype, torch.float32))
