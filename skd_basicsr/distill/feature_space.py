"""The frozen feature spaces of L_CL: an object that maps an image to its features by layer, given to the loss.

* :class:`VGG19FeatureSpace` (``feature_space: vgg19``): BasicSR's ``VGGFeatureExtractor`` on VGG19 ImageNet
  weights found on disk (``vgg_weights``, torchvision's cache or experiments/pretrained_models); nothing is
  downloaded at run time.
* :class:`TeacherFeatureSpace` (``feature_space: teacher``): the frozen teacher's own encoder features; no download.
  The model that owns the teacher builds it and gives it to the loss. The negative (the degraded input) is what
  the teacher already sees in its distillation forward, so its features come from that forward
  (:meth:`TeacherFeatureSpace.recorded`) and cost nothing extra.

Both have ``layer_weights`` (an ordered {layer: weight}), are called on an image batch, and say with
``recorded(features)`` which features of the teacher's forward on the input they can reuse (None: none).
"""
from collections import OrderedDict
from os import path as osp

import torch
from torch import nn

VGG19_FILE = 'vgg19-dcbb9e9d.pth'
# conv-block outputs of VGG19 with the weights of the contrastive regularisation of Wu et al. (CVPR 2021)
DEFAULT_VGG_LAYERS = OrderedDict([('relu1_1', 1 / 32), ('relu2_1', 1 / 16), ('relu3_1', 1 / 8), ('relu4_1', 1 / 4),
                                  ('relu5_1', 1.0)])
DEFAULT_TEACHER_LAYERS = OrderedDict([('encoder_level1', 1.0), ('encoder_level2', 1.0), ('encoder_level3', 1.0)])
FEATURE_SPACES = ('vgg19', 'teacher')


def _layer_weights(layer_weights, default):
    weights = OrderedDict(layer_weights or default)
    if not weights:
        raise ValueError('SKDContrastiveLoss: layer_weights is empty.')
    return weights


def vgg19_weight_candidates(vgg_weights=None):
    """Where VGG19 weights are looked for, in order: the option, torchvision's cache, BasicSR's usual place."""
    candidates = [vgg_weights] if vgg_weights else []
    candidates.append(osp.join(torch.hub.get_dir(), 'checkpoints', VGG19_FILE))
    candidates.append(osp.join('experiments', 'pretrained_models', VGG19_FILE))
    return candidates


class VGG19FeatureSpace(nn.Module):
    """BasicSR's frozen ``VGGFeatureExtractor`` on VGG19 weights found offline.

    Args:
        layer_weights (dict | None): {layer: weight}; relu1_1..relu5_1 with 1/32..1 when None. Default: None.
        vgg_weights (str | None): Path of a VGG19 state_dict. Default: None.

    Raises:
        FileNotFoundError: When ``vgg_weights`` is given and missing, or no candidate file exists.
    """

    def __init__(self, layer_weights=None, vgg_weights=None):
        import basicsr.archs.vgg_arch as vgg_arch

        super().__init__()
        self.layer_weights = _layer_weights(layer_weights, DEFAULT_VGG_LAYERS)
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
            self.vgg = vgg_arch.VGGFeatureExtractor(list(self.layer_weights), vgg_type='vgg19', use_input_norm=True,
                                                    range_norm=False, requires_grad=False)
        finally:
            vgg_arch.VGG_PRETRAIN_PATH = default_path

    def forward(self, img):
        return self.vgg(img)

    def recorded(self, teacher_features):
        """VGG features are never among the teacher's."""
        return None


class TeacherFeatureSpace:
    """The frozen teacher's own features at the layers of ``layer_weights``.

    Args:
        extract (callable): ``(img, layers) -> {layer: feature}``, a forward of the frozen teacher that records
            those layers (the model that owns the teacher gives it).
        layer_weights (dict | None): {layer: weight}; the teacher's encoder_level1..3 with 1 each when None.
            Default: None.
    """

    def __init__(self, extract, layer_weights=None):
        self.extract = extract
        self.layer_weights = _layer_weights(layer_weights, DEFAULT_TEACHER_LAYERS)

    @property
    def layers(self):
        return list(self.layer_weights)

    def __call__(self, img):
        return self.extract(img, self.layers)

    def recorded(self, teacher_features):
        """This space's features of the input, taken from the teacher's forward on it (``{layer: feature}``)."""
        return {layer: teacher_features[layer] for layer in self.layer_weights}


def teacher_feature_space(contrast_opt, net_t, capture):
    """The teacher feature space of L_CL for ``contrast_opt.feature_space: teacher``, else None (the loss builds its
    own space).

    Under SKDModel ``feature_space`` defaults to ``teacher``: it needs no download, and the model has the teacher.
    ``feature_space: vgg19`` stays available by name.

    Args:
        contrast_opt (dict | None): ``train.contrast_opt``.
        net_t (nn.Module): The frozen teacher, whose modules the layers must name.
        capture (callable): ``(img, layers) -> {layer: feature}``, the teacher's forward as far as the layers.

    Raises:
        OptionError: Empty layer weights, or layers the teacher has no module for (the closest names listed).
    """
    from skd_basicsr.distill.taps import describe_unknown_names
    from skd_basicsr.platform.errors import OptionError

    if not contrast_opt or contrast_opt.get('feature_space', 'teacher') != 'teacher':
        return None
    try:
        space = TeacherFeatureSpace(capture, contrast_opt.get('layer_weights'))
    except ValueError as err:
        raise OptionError(f'train.contrast_opt: {err}') from None
    modules = dict(net_t.named_modules())
    unknown = [layer for layer in space.layers if layer not in modules or layer == '']
    if unknown:
        default = '' if contrast_opt.get('layer_weights') else ' (the default, Restormer\'s encoder levels)'
        raise OptionError(f'train.contrast_opt.layer_weights{default}: '
                          f'{describe_unknown_names(unknown, modules, "network_t")}')
    return space
