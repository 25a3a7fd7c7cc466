"""``train.distill_schedule``: a factor on the distillation terms (alpha2 L_GK and alpha3 L_CL) over the iterations.

The paper keeps alpha2 and alpha3 constant (no ``distill_schedule``: a factor of 1 at every iteration). Two
readings of when feature distillation should act, first candidates of the distillation study (docs/kd_study.md):

* a warm-up, so that the freshly built adapters (and a student far from the teacher) are not pulled hard at once.
  On a student cut in width only, started from the teacher's weights, normalised L_GK warmed up over the first 10%
  of the iterations did better than without (docs/kd_study.md, 5.12), and `basicsr distill` writes it there;
* a decay to zero, so that the student is guided early and then trained on the ground truth alone, without being
  pulled back towards a teacher it has caught up with.

Options (all iterations are BasicSR's ``current_iter``, which starts at 1)::

    train:
      distill_schedule:
        warmup_iter: 100   # factor rises linearly from 0 to 1 over the first 100 iterations (0: no warm-up)
        decay_iter: 300    # factor starts falling linearly here (default: warmup_iter) ...
        end_iter: 600      # ... and reaches 0 here; from then on the terms are not computed at all (default: none)

The factor multiplies ``loss_weight`` of ``feature_opt`` and ``contrast_opt``; ``output_opt`` (output KD) and the
pixel loss are not scheduled. SKDModel logs it as ``distill_scale``; at 0 the terms are not computed at all.
"""
import numbers

from skd_basicsr.platform.errors import OptionError

SCHEDULE_KEYS = ('warmup_iter', 'decay_iter', 'end_iter')


class DistillSchedule:
    """The factor of the distillation terms at an iteration.

    Args:
        warmup_iter (int): Iterations of the linear warm-up from 0 to 1; 0 for none. Default: 0.
        decay_iter (int | None): Where the linear decay starts. Default: None (``warmup_iter``).
        end_iter (int | None): Where the factor reaches 0 and stays; None: no decay. Default: None.
    """

    def __init__(self, warmup_iter=0, decay_iter=None, end_iter=None):
        self.warmup_iter = warmup_iter
        self.decay_iter = warmup_iter if decay_iter is None else decay_iter
        self.end_iter = end_iter

    @classmethod
    def from_options(cls, opt):
        """Build from ``train.distill_schedule`` (a dict, or None for a constant factor of 1).

        Raises:
            OptionError: Unknown keys, values that are not non-negative integers, or an order that makes no sense.
        """
        if opt is None:
            return cls()
        where = 'train.distill_schedule'
        if not isinstance(opt, dict):
            raise OptionError(f'{where} must be a mapping with keys among {list(SCHEDULE_KEYS)}, got {opt!r}.')
        unknown = sorted(set(opt) - set(SCHEDULE_KEYS))
        if unknown:
            raise OptionError(f'{where}: unknown option(s) {unknown}; the options are {list(SCHEDULE_KEYS)}.')
        for key, value in opt.items():
            if value is None and key != 'warmup_iter':
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise OptionError(f'{where}.{key} must be an integer >= 0, got {value!r}.')
        if 'decay_iter' in opt and opt['decay_iter'] is not None and opt.get('end_iter') is None:
            raise OptionError(f'{where}: decay_iter needs end_iter, the iteration where the factor reaches 0.')
        schedule = cls(opt.get('warmup_iter', 0), opt.get('decay_iter'), opt.get('end_iter'))
        if schedule.end_iter is not None and not schedule.warmup_iter <= schedule.decay_iter < schedule.end_iter:
            raise OptionError(f'{where}: need warmup_iter <= decay_iter < end_iter, got warmup_iter '
                              f'{schedule.warmup_iter}, decay_iter {schedule.decay_iter}, end_iter '
                              f'{schedule.end_iter}.')
        return schedule

    @property
    def constant(self):
        """True when the factor is 1 at every iteration."""
        return self.warmup_iter == 0 and self.end_iter is None

    def __call__(self, current_iter):
        """The factor in [0, 1] at ``current_iter``."""
        if self.end_iter is not None and current_iter >= self.end_iter:
            return 0.0
        factor = 1.0
        if self.warmup_iter > 0 and current_iter < self.warmup_iter:
            factor = current_iter / self.warmup_iter
        if self.end_iter is not None and current_iter > self.decay_iter:
            factor = min(factor, (self.end_iter - current_iter) / (self.end_iter - self.decay_iter))
        return factor

    def __repr__(self):
        return (f'DistillSchedule(warmup_iter={self.warmup_iter}, decay_iter={self.decay_iter}, '
                f'end_iter={self.end_iter})')
