"""L_CL with the study's candidate negatives and bound (issue 10): :class:`StudySKDContrastiveLoss`.

The defaults are the paper's reading, so with them it is the product's :class:`SKDContrastiveLoss` exactly.
"""
import torch
from basicsr.utils.registry import LOSS_REGISTRY

from skd_basicsr.distill.contrastive_loss import SKDContrastiveLoss, l1_per_sample, positive_distance

NEGATIVES = ('input', 'lagged', 'batch')  # where the negatives come from; StudySKDModel makes them
BOUNDS = ('none', 'positive')


@LOSS_REGISTRY.register()
class StudySKDContrastiveLoss(SKDContrastiveLoss):
    """:class:`SKDContrastiveLoss` with the study's choice of negatives and a bound on the push.

    * ``negatives``: which images are pushed away. 'input' is the degraded input (the paper). With a ratio and no
      margin, that push moves the output along minus the noise and can overshoot into grain; published
      contrastive distillation pushes away from restored images instead: 'lagged' is the output of a lagging
      exponential moving average of the student on the same input (after DCKD, AAAI 2025), 'batch' the teacher's
      output for another image of the batch (after CSD, IJCAI 2021). StudySKDModel makes them; called directly, the
      loss takes whatever ``negative`` holds.
    * ``bound: positive``: each negative distance is capped at the positive's own distance to that negative
      (``min(d(a, n), d(p, n))``, the cap detached), so the push stops once the student is as far from the
      negative as the teacher is: no overshoot, and no scale to tune.

    Args:
        negatives (list[str]): Any of 'input', 'lagged', 'batch' (see above). Default: ['input'].
        bound (str): 'none' (the paper's ratio) | 'positive' (negative distances capped, see above).
            Default: 'none'.
        lag_decay (float): Decay of the lagging student average that makes the 'lagged' negative, in [0, 1)
            (kept by StudySKDModel, updated after every step). Default: 0.99.
        lag_warmup_iter (int): Iterations before the 'lagged' negative is used: until then the average is still about
            the student itself (StudySKDModel leaves it out, and L_CL is not computed if it is the only negative).
            Default: 100.
        **kwargs: The options of :class:`SKDContrastiveLoss`.
    """

    def __init__(self, negatives=('input', ), bound='none', lag_decay=0.99, lag_warmup_iter=100, **kwargs):
        super().__init__(**kwargs)
        negatives = [negatives] if isinstance(negatives, str) else list(negatives or [])
        if not negatives or any(n not in NEGATIVES for n in negatives) or len(set(negatives)) != len(negatives):
            raise ValueError(f'SKDContrastiveLoss: negatives {negatives!r} is not allowed: use a non-empty list of '
                             f'distinct names among {NEGATIVES}.')
        if bound not in BOUNDS:
            raise ValueError(f'SKDContrastiveLoss: bound {bound!r} is not one of {BOUNDS}.')
        if isinstance(lag_decay, bool) or not isinstance(lag_decay, (int, float)) or not 0 <= lag_decay < 1:
            raise ValueError(f'SKDContrastiveLoss: lag_decay must be a number in [0, 1), got {lag_decay!r}.')
        if isinstance(lag_warmup_iter, bool) or not isinstance(lag_warmup_iter, int) or lag_warmup_iter < 0:
            raise ValueError(f'SKDContrastiveLoss: lag_warmup_iter must be an integer >= 0, got {lag_warmup_iter!r}.')
        self.negatives = tuple(negatives)
        self.lag_warmup_iter = lag_warmup_iter
        self.bound = bound
        self.lag_decay = float(lag_decay)

    def negative_distance(self, anchor, positives, negative):
        distance = l1_per_sample(anchor, negative)
        if self.bound == 'positive':
            distance = torch.minimum(distance, positive_distance(positives, negative))
        return distance
