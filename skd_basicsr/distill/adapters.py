"""Trainable 1x1 convolutions that map student features to the teacher's channel count, checked on a probe."""
from torch import nn


class FeatureAdapters(nn.Module):
    """One adapter per distilled level: a 1x1 convolution where channels differ, the identity where they match.

    Adapters exist only in training: the optimizer updates them with the student, training states save and restore
    them, and the exported student (``net_g_*.pth``) never contains them.

    Args:
        student_channels (list[int]): Channels of each student feature.
        teacher_channels (list[int]): Channels of the matching teacher feature.
    """

    def __init__(self, student_channels, teacher_channels):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f'{len(student_channels)} student levels but {len(teacher_channels)} teacher levels.')
        self.levels = nn.ModuleList(
            nn.Conv2d(c_s, c_t, kernel_size=1) if c_s != c_t else nn.Identity()
            for c_s, c_t in zip(student_channels, teacher_channels))

    def forward(self, feats):
        """Map a list of student features (one per level) to the teacher's channels."""
        return [adapter(feat) for adapter, feat in zip(self.levels, feats)]


def adapters_for_pairs(pairs, feats_s, feats_t, adapter='conv1x1', probe_side=None):
    """Check the feature pairs on the features of one probe forward and build their adapters.

    Args:
        pairs (list[dict]): ``{student: NAME, teacher: NAME}`` of ``distill.features``.
        feats_s (dict): Student features of the probe, by module name.
        feats_t (dict): Teacher features of the probe, by module name.
        adapter (str): 'conv1x1' (adapt where channels differ) | 'none' (channels must match). Default: 'conv1x1'.
        probe_side (int | None): The probe's side, for the message. Default: None.

    Raises:
        OptionError: A module whose output is not one (B, C, H, W) tensor, levels of different resolution, or
            channels that differ with ``adapter: none``.
    """
    import torch

    from skd_basicsr.platform.errors import OptionError

    channels_s, channels_t = [], []
    for pair in pairs:
        s, t = feats_s[pair['student']], feats_t[pair['teacher']]
        where = f"distill.features {pair['student']} -> {pair['teacher']}"
        if not (torch.is_tensor(s) and s.dim() == 4 and torch.is_tensor(t) and t.dim() == 4):
            raise OptionError(f'{where}: both modules must output one (B, C, H, W) tensor.')
        if s.shape[-2:] != t.shape[-2:]:
            raise OptionError(f'{where}: spatial sizes differ (student {tuple(s.shape[-2:])}, teacher '
                              f'{tuple(t.shape[-2:])} for a {probe_side}x{probe_side} input); pair levels of '
                              'the same resolution.')
        if s.shape[1] != t.shape[1] and adapter == 'none':
            raise OptionError(f'{where}: channels differ (student {s.shape[1]}, teacher {t.shape[1]}) and '
                              'distill.adapter is none; set `adapter: conv1x1` or pair levels of equal width.')
        channels_s.append(s.shape[1])
        channels_t.append(t.shape[1])
    return FeatureAdapters(channels_s, channels_t)
