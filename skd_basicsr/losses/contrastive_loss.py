"""L_CL: the image-level contrastive loss that replaces the usual L1/KL between student and teacher outputs."""
from collections import OrderedDict
from os import path as osp

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

VGG19_FILE = 'vgg19-dcbb9e9d.pth'
# conv-block outputs of VGG19 with the weights of the contrastive regularisation of Wu et al. (CVPR 2021)
DEFAULT_VGG_LAYERS = OrderedDict([('relu1_1', 1 / 32), ('relu2_1', 1 / 16), ('relu3_1', 1 / 8), ('relu4_1', 1 / 4),
                                  ('relu5_1', 1.0)])
DEFAULT_TEACHER_LAYERS = OrderedDict([('encoder_level1', 1.0), ('encoder_level2', 1.0), ('encoder_level3', 1.0)])
FEATURE_SPACES = ('vgg19', 'teacher')
POSITIVES = ('teacher', 'gt', 'both')


def vgg19_weight_candidates(vgg_weights=None):
    """Where VGG19 weights are looked for, in order: the option, torchvision's cache, BasicSR's usual place."""
    candidates = [vgg_weights] if vgg_weights else []
    candidates.append(osp.join(torch.hub.get_dir(), 'checkpoints', VGG19_FILE))
    candidates.append(osp.join('experiments', 'pretrained_models', VGG19_FILE))
    return candidates


def build_vgg19_extractor(layers, vgg_weights=None):
    """BasicSR's frozen ``VGGFeatureExtractor`` on VGG19 weights found offline.

    Raises:
        FileNotFoundError: When ``vgg_weights`` is given and missing, or no candidate file exists.
    """
    import basicsr.archs.vgg_arch as vgg_arch

    if vgg_weights and not osp.isfile(vgg_weights):
        raise FileNotFoundError(f'SKDContrastiveLoss: vgg_weights {vgg_weights} does not exist.')
    found = next((path for path in vgg19_weight_candidates(vgg_weights) if osp.isfile(path)), None)
    if found is None:
        raise FileNotFoundError(
            'SKDContrastiveLoss with feature_space vgg19 needs VGG19 ImageNet weights on disk, and nothing can be '
            f'downloaded at run time. Looked in: {", ".join(vgg19_weight_candidates(vgg_weights))}. Put '
            f'{VGG19_FILE} in one of those places or name it with `vgg_weights: PATH`, or use '
            '`feature_space: teacher`, which needs no download.')
    default_path = vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.VGG_PRETRAIN_PATH = found  # BasicSR reads the weights from this module constant
    try:
        return vgg_arch.VGGFeatureExtractor(list(layers), vgg_type='vgg19', use_input_norm=True, range_norm=False,
                                            requires_grad=False)
    finally:
        vgg_arch.VGG_PRETRAIN_PATH = default_path


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
        feature_space (str): 'vgg19' (BasicSR's VGGFeatureExtractor; weights from ``vgg_weights``, torchvision's
            cache or experiments/pretrained_models) or 'teacher' (the frozen teacher's own encoder features; no
            download, bound by the model with :meth:`bind_feature_extractor`). Default: 'vgg19'.
        positive (str): 'teacher' | 'gt' | 'both'. Default: 'teacher'.
        layer_weights (dict | None): {layer: weight}; VGG19 relu1_1..relu5_1 with 1/32..1 by default, or the
            teacher's encoder_level1..3 with 1 each. Default: None.
        vgg_weights (str | None): Path of a VGG19 state_dict. Default: None.
        eps (float): Keeps the ratio finite when anchor and negative coincide. Default: 1e-7.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', feature_space='vgg19', positive='teacher',
                 layer_weights=None, vgg_weights=None, eps=1e-7):
        super().__init__()
        if feature_space not in FEATURE_SPACES:
            raise ValueError(f'SKDContrastiveLoss: feature_space {feature_space!r} is not one of {FEATURE_SPACES}.')
        if positive not in POSITIVES:
            raise ValueError(f'SKDContrastiveLoss: positive {positive!r} is not one of {POSITIVES}.')
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"SKDContrastiveLoss: reduction {reduction!r} is not one of ('mean', 'sum').")
        if eps <= 0:
            raise ValueError(f'SKDContrastiveLoss: eps must be > 0, got {eps}.')
        default = DEFAULT_VGG_LAYERS if feature_space == 'vgg19' else DEFAULT_TEACHER_LAYERS
        self.layer_weights = OrderedDict(layer_weights or default)
        if not self.layer_weights:
            raise ValueError('SKDContrastiveLoss: layer_weights is empty.')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.feature_space = feature_space
        self.positive = positive
        self.eps = eps
        self._extract = None
        if feature_space == 'vgg19':
            self.vgg = build_vgg19_extractor(self.layer_weights, vgg_weights)
            self._extract = self.vgg

    @property
    def layers(self):
        return list(self.layer_weights)

    def bind_feature_extractor(self, extract):
        """Set the function ``image -> {layer: feature}`` of the ``teacher`` feature space (the model does this)."""
        if self.feature_space != 'teacher':
            raise RuntimeError('bind_feature_extractor is only for feature_space: teacher.')
        self._extract = extract

    def features(self, img):
        """Features of ``img`` in this loss's frozen space, by layer."""
        if self._extract is None:
            raise RuntimeError('SKDContrastiveLoss(feature_space=teacher) has no teacher bound; SKDModel binds it. '
                               'Outside SKDModel, call bind_feature_extractor(fn) first.')
        return self._extract(img)

    def positives(self, teacher_output, gt):
        """The positive images for the configured ``positive`` option."""
        return {'teacher': [teacher_output], 'gt': [gt], 'both': [teacher_output, gt]}[self.positive]

    def forward(self, pred, positives, negative, negative_feats=None):
        """
        Args:
            pred (Tensor): Anchor, the student's output (B, C, H, W); gradient flows back through it.
            positives (Tensor | list[Tensor]): Positive image(s) of the same shape; no gradient.
            negative (Tensor): The degraded input; no gradient.
            negative_feats (dict | None): Features of ``negative`` already computed (in the teacher feature space,
                the teacher's own taps from its forward on the input), to avoid a second pass. Default: None.

        Returns:
            Tensor: loss_weight * L_CL.
        """
        positives = [positives] if torch.is_tensor(positives) else list(positives)
        for img in positives + [negative]:
            if img.shape != pred.shape:
                raise ValueError(f'SKDContrastiveLoss: anchor shape {tuple(pred.shape)} differs from a '
                                 f'positive/negative of shape {tuple(img.shape)}.')
        anchor_feats = self.features(pred)
        with torch.no_grad():
            pos_feats = [self.features(img) for img in positives]
            if negative_feats is None:
                negative_feats = self.features(negative)
        loss = 0
        for layer, weight in self.layer_weights.items():
            anchor = anchor_feats[layer]
            d_pos = sum(_l1_per_sample(anchor, feats[layer]) for feats in pos_feats) / len(pos_feats)
            d_neg = _l1_per_sample(anchor, negative_feats[layer])
            loss = loss + weight * d_pos / (d_neg + self.eps)
        loss = loss.mean() if self.reduction == 'mean' else loss.sum()
        return self.loss_weight * loss


def _l1_per_sample(x, y):
    # inference-mode tensors (the teacher's taps) cannot be saved for backward; abs() of the difference saves only
    # the difference, which is a normal tensor
    return (x - y).abs().flatten(1).mean(1)
