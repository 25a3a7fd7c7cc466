"""L_CL: the image-level contrastive loss that replaces the usual L1/KL between student and teacher outputs."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from skd_basicsr.losses.feature_space import FEATURE_SPACES, VGG19FeatureSpace

POSITIVES = ('teacher', 'gt', 'both')


@LOSS_REGISTRY.register()
class SKDContrastiveLoss(nn.Module):
    """Image-level contrastive loss in a frozen feature space, ratio form.

    For each feature layer k with weight w_k and L1 distance d (mean over the feature map, per sample)::

        L_CL = sum_k w_k * d(phi_k(anchor), phi_k(positive)) / (d(phi_k(anchor), phi_k(negative)) + eps)

    anchor = the student's output, positive = the teacher's output (or the ground truth, or the mean distance to
    both), negative = the degraded input. Pulling the student towards the teacher and pushing it away from the
    degraded input replaces the usual L1 between the two outputs.

    Args:
        loss_weight (float): alpha3, weight of L_CL in the total loss. Default: 1.0.
        reduction (str): Over the batch: 'mean' | 'sum'. Default: 'mean'.
        feature_space (str | object): 'vgg19' (built here, see
            :class:`~skd_basicsr.losses.feature_space.VGG19FeatureSpace`), or a feature space object such as the
            :class:`~skd_basicsr.losses.feature_space.TeacherFeatureSpace` SKDModel builds for
            ``feature_space: teacher``. Default: 'vgg19' (under SKDModel, whose option files may leave it out,
            'teacher').
        positive (str): 'teacher' | 'gt' | 'both'. Default: 'teacher'.
        layer_weights (dict | None): {layer: weight} of the 'vgg19' space. Default: None (its defaults).
        vgg_weights (str | None): Path of a VGG19 state_dict for the 'vgg19' space. Default: None.
        eps (float): Keeps the ratio finite when anchor and negative coincide. Default: 1e-7.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', feature_space='vgg19', positive='teacher',
                 layer_weights=None, vgg_weights=None, eps=1e-7):
        super().__init__()
        if isinstance(feature_space, str) and feature_space not in FEATURE_SPACES:
            raise ValueError(f'SKDContrastiveLoss: feature_space {feature_space!r} is not one of {FEATURE_SPACES}.')
        if feature_space == 'teacher':
            raise ValueError('SKDContrastiveLoss: feature_space teacher needs the teacher network; SKDModel builds '
                             'that space. Outside SKDModel, pass a TeacherFeatureSpace object.')
        if positive not in POSITIVES:
            raise ValueError(f'SKDContrastiveLoss: positive {positive!r} is not one of {POSITIVES}.')
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"SKDContrastiveLoss: reduction {reduction!r} is not one of ('mean', 'sum').")
        if eps <= 0:
            raise ValueError(f'SKDContrastiveLoss: eps must be > 0, got {eps}.')
        self.space = VGG19FeatureSpace(layer_weights, vgg_weights) if feature_space == 'vgg19' else feature_space
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.positive = positive
        self.eps = eps

    def forward(self, pred, target, negative, gt=None, negative_feats=None):
        """
        Args:
            pred (Tensor): Anchor, the student's output (B, C, H, W); gradient flows back through it.
            target (Tensor): The teacher's output, the positive unless ``positive`` is 'gt'; no gradient.
            negative (Tensor): The degraded input, at the output's size (SKDModel upsamples it for
                super-resolution); no gradient.
            gt (Tensor | None): The ground truth, needed when ``positive`` is 'gt' or 'both'. Default: None.
            negative_feats (dict | None): Features of ``negative`` already computed (in the teacher feature space,
                the teacher's own taps from its forward on the input), to avoid a second pass. Default: None.

        Returns:
            Tensor: loss_weight * L_CL.
        """
        positives = {'teacher': [target], 'gt': [gt], 'both': [target, gt]}[self.positive]
        if any(img is None for img in positives):
            raise ValueError(f'SKDContrastiveLoss: positive {self.positive!r} needs the ground truth (gt).')
        for img in positives + [negative]:
            if img.shape != pred.shape:
                raise ValueError(f'SKDContrastiveLoss: anchor shape {tuple(pred.shape)} differs from a '
                                 f'positive/negative of shape {tuple(img.shape)}.')
        anchor_feats = self.space(pred)
        with torch.no_grad():
            pos_feats = [self.space(img) for img in positives]
            if negative_feats is None:
                negative_feats = self.space(negative)
        loss = 0
        for layer, weight in self.space.layer_weights.items():
            anchor = anchor_feats[layer]
            d_pos = sum(_l1_per_sample(anchor, feats[layer]) for feats in pos_feats) / len(pos_feats)
            d_neg = _l1_per_sample(anchor, negative_feats[layer])
            loss = loss + weight * d_pos / (d_neg + self.eps)
        loss = loss.mean() if self.reduction == 'mean' else loss.sum()
        return self.loss_weight * loss


def _l1_per_sample(x, y):
    return (x - y).abs().flatten(1).mean(1)
