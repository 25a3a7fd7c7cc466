"""Trainable 1x1 convolutions that map student features to the teacher's channel count."""
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
