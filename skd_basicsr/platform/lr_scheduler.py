"""Learning-rate schedulers: Restormer's cyclic cosine beside BasicSR's own, for every BasicSR model.

:class:`CosineAnnealingRestartCyclicLR` (a cosine cycle per period, each with its own floor) joins BasicSR's
``MultiStepLR``, ``MultiStepRestartLR`` and ``CosineAnnealingRestartLR`` in :func:`setup_schedulers`, which replaces
``BaseModel.setup_schedulers``. It reads a copy of ``train.scheduler``: BasicSR pops ``type`` out of the options
themselves.
"""
import bisect
import itertools
import math
from copy import deepcopy

from basicsr.models import lr_scheduler as basicsr_lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from skd_basicsr.platform.errors import OptionError, did_you_mean


def cyclic_cosine_lr(base_lr, iteration, periods, restart_weights, eta_mins):
    """Learning rate of :class:`CosineAnnealingRestartCyclicLR` at one iteration.

    Cycle i covers the iterations (P_{i-1}, P_i] with P_i = periods[0] + ... + periods[i] (cycle 0 starts at 0);
    inside it, at t = iteration - P_{i-1}:
    ``eta_mins[i] + restart_weights[i] * 0.5 * (base_lr - eta_mins[i]) * (1 + cos(pi * t / periods[i]))``.
    After the last cycle the rate stays at its final value, ``eta_mins[-1]``.

    Args:
        base_lr (float): Initial learning rate of the parameter group.
        iteration (int): Scheduler step (``last_epoch``), 0 at the start.
        periods (list[int]): Length of each cycle.
        restart_weights (list[float]): Weight of each cycle's cosine.
        eta_mins (list[float]): Floor of each cycle.

    Returns:
        float: The learning rate.
    """
    ends = list(itertools.accumulate(periods))
    iteration = min(max(iteration, 0), ends[-1])
    idx = bisect.bisect_left(ends, iteration)
    start = ends[idx - 1] if idx > 0 else 0
    progress = (iteration - start) / periods[idx]
    eta_min = eta_mins[idx]
    return eta_min + restart_weights[idx] * 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * progress))


class CosineAnnealingRestartCyclicLR(LRScheduler):
    """Cosine annealing restarted at each period, each cycle with its own weight and floor (Restormer's scheduler).

    With base lr 3e-4, ``periods=[92000, 208000]``, ``restart_weights=[1, 1]``, ``eta_mins=[3e-4, 1e-6]`` (the
    official Restormer recipe) the rate is 3e-4 for the first 92k iterations, since that cycle's floor is the
    base rate, then anneals along a cosine to 1e-6 at 300k. See :func:`cyclic_cosine_lr` for the formula.

    Args:
        optimizer (torch.optim.Optimizer): Wrapped optimizer.
        periods (list[int]): Length of each cycle, in iterations.
        restart_weights (list[float]): Weight of each cycle's cosine. Default: (1, ).
        eta_mins (list[float]): Minimum learning rate of each cycle. Default: (0, ).
        last_epoch (int): Index of the last step, -1 to start. Default: -1.
    """

    def __init__(self, optimizer, periods, restart_weights=(1, ), eta_mins=(0, ), last_epoch=-1):
        if not periods or any(isinstance(p, bool) or not isinstance(p, int) or p <= 0 for p in periods):
            raise ValueError(f'periods must be a non-empty list of positive integers, got {periods!r}.')
        if not len(periods) == len(restart_weights) == len(eta_mins):
            raise ValueError(f'periods, restart_weights and eta_mins need one entry per cycle; got {len(periods)}, '
                             f'{len(restart_weights)} and {len(eta_mins)}.')
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.eta_mins = list(eta_mins)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """Learning rate of each parameter group at ``self.last_epoch``."""
        return [
            cyclic_cosine_lr(base_lr, self.last_epoch, self.periods, self.restart_weights, self.eta_mins)
            for base_lr in self.base_lrs
        ]


SCHEDULERS = {
    'MultiStepLR': basicsr_lr_scheduler.MultiStepRestartLR,
    'MultiStepRestartLR': basicsr_lr_scheduler.MultiStepRestartLR,
    'CosineAnnealingRestartLR': basicsr_lr_scheduler.CosineAnnealingRestartLR,
    'CosineAnnealingRestartCyclicLR': CosineAnnealingRestartCyclicLR,
}


def setup_schedulers(self):
    """``BaseModel.setup_schedulers`` with :class:`CosineAnnealingRestartCyclicLR`; ``train.scheduler`` is not changed.

    One scheduler of type ``train.scheduler.type`` per optimizer in ``self.optimizers``; the other keys of
    ``train.scheduler`` are its arguments.

    Raises:
        OptionError: When the type is missing or unknown, or the scheduler refuses the arguments.
    """
    sched_opt = deepcopy(self.opt['train'].get('scheduler'))
    if not isinstance(sched_opt, dict) or 'type' not in sched_opt:
        raise OptionError(f'train.scheduler needs a type, one of: {", ".join(SCHEDULERS)}.')
    sched_type = sched_opt.pop('type')
    if sched_type not in SCHEDULERS:
        raise OptionError(f'Unknown scheduler type {sched_type!r} in train.scheduler.'
                          f'{did_you_mean(sched_type, list(SCHEDULERS))} Valid types: {", ".join(SCHEDULERS)}.')
    for optimizer in self.optimizers:
        try:
            self.schedulers.append(SCHEDULERS[sched_type](optimizer, **sched_opt))
        except (TypeError, ValueError) as err:
            raise OptionError(f'train.scheduler ({sched_type}): {err}') from None
