"""Training options BasicSR 1.4.2 lacks and the official Restormer recipe needs, for every BasicSR model.

:func:`install` (called by ``skd_basicsr/models/__init__.py``, idempotent) adds four things to
``basicsr.models.base_model.BaseModel``, so ``SRModel``, its subclasses (our ``SKDModel`` among them) and any
other BasicSR model get them without a line of their own:

* **Any torch optimizer.** ``train.optim_g.type`` may name any ``torch.optim`` optimizer (``Adam``, ``AdamW``,
  ``SGD``, ...); :func:`get_optimizer` replaces ``BaseModel.get_optimizer``, which knew only ``Adam``.
* **Restormer's scheduler.** :class:`CosineAnnealingRestartCyclicLR` (a cosine cycle per period, each with its
  own floor) joins BasicSR's ``MultiStepLR``, ``MultiStepRestartLR`` and ``CosineAnnealingRestartLR`` in
  :func:`setup_schedulers`, which replaces ``BaseModel.setup_schedulers``. It reads a copy of
  ``train.scheduler``: BasicSR pops ``type`` out of the options themselves.
* **Gradient clipping** (``train.use_grad_clip``, ``train.grad_clip_norm``). Every optimizer made by
  ``get_optimizer`` gets a step pre-hook (``Optimizer.register_step_pre_hook``) that clips the gradient norm of
  that optimizer's parameters right before it steps, so ``optimize_parameters`` stays as the model wrote it.
  With ``use_grad_clip: true`` and no norm the norm is 0.01, the value Restormer's model code hard-codes behind
  the same switch. A model that builds an optimizer by hand can call :func:`attach_grad_clip` itself.
* **Progressive patch training** (``train.progressive``: ``iters``, ``gt_sizes``, ``mini_batch_sizes``). The
  loader delivers the largest patch and batch; each training iteration is then cropped to the current stage's
  patch at one random location shared by ``lq`` and ``gt`` (on the lq grid, times the scale, for SR) and cut to
  its first ``mini_batch`` samples. See :class:`ProgressivePatches`.

How progressive training hooks in, and why this way. BasicSR's loop calls ``model.update_learning_rate(iter)``
right before ``model.feed_data(train_data)``; validation calls ``feed_data`` on its own. So when
``train.progressive`` is set (and only then), the model *instance* gets two thin wrappers when
``BaseModel.__init__`` runs: ``update_learning_rate`` records the iteration, and ``feed_data`` runs the model's
own ``feed_data`` (whatever subclass defines it) and crops ``self.lq``/``self.gt`` only if an iteration was
recorded since the previous ``feed_data``. The record is consumed by that one call, so validation batches, test
runs and any later ``feed_data`` go through untouched, whatever their size. Instance attributes rather than a
patched ``SRModel.feed_data``, because a class-level patch is shadowed by every subclass that overrides
``feed_data`` and would crop in the middle of one that extends it (and makes ``lq`` from ``gt`` afterwards);
an instance attribute wraps the model's complete ``feed_data`` for any ``BaseModel`` subclass. Models without
the option are not touched at all. The options are checked when the model is built, before any network.
"""
import bisect
import difflib
import functools
import math
import random
from copy import deepcopy

import torch
from torch.optim.lr_scheduler import LRScheduler

from basicsr.models import lr_scheduler as basicsr_lr_scheduler
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from skd_basicsr.compat import OptionError

DEFAULT_GRAD_CLIP_NORM = 0.01
PROGRESSIVE_KEYS = ('iters', 'gt_sizes', 'mini_batch_sizes')


def _did_you_mean(name, choices):
    same_letters = [c for c in choices if c.lower() == str(name).lower()]
    close = same_letters or difflib.get_close_matches(str(name), choices, n=1)
    return f' Did you mean {close[0]}?' if close else ''


# --------------------------------------------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------------------------------------------
def optimizer_names():
    """Names of the optimizers ``torch.optim`` provides, sorted."""
    return sorted(
        name for name, obj in vars(torch.optim).items()
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer)


def get_optimizer(self, optim_type, params, lr, **kwargs):
    """``BaseModel.get_optimizer`` for every ``torch.optim`` optimizer, with gradient clipping when configured.

    Args:
        optim_type (str): Class name in ``torch.optim``, e.g. 'AdamW'.
        params (iterable): Parameters or parameter groups to optimize.
        lr (float): Learning rate.
        kwargs: Further arguments of the optimizer (``weight_decay``, ``betas``, ``momentum``, ...).

    Returns:
        torch.optim.Optimizer: The optimizer; it clips gradients before each step if ``train.use_grad_clip``.

    Raises:
        OptionError: When ``optim_type`` is not a torch optimizer or the optimizer refuses the arguments.
    """
    names = optimizer_names()
    if optim_type not in names:
        raise OptionError(f'Unknown optimizer type {optim_type!r}.{_did_you_mean(optim_type, names)} '
                          f'Valid types (torch.optim): {", ".join(names)}.')
    try:
        optimizer = getattr(torch.optim, optim_type)(params, lr=lr, **kwargs)
    except TypeError as err:
        raise OptionError(f'Optimizer {optim_type} does not accept the options given ({err}).') from None
    max_norm = grad_clip_norm(self.opt.get('train') or {})
    if max_norm is not None:
        attach_grad_clip(optimizer, max_norm)
    return optimizer


# --------------------------------------------------------------------------------------------------------------
# gradient clipping
# --------------------------------------------------------------------------------------------------------------
def grad_clip_norm(train_opt):
    """The clipping norm that ``train.use_grad_clip`` / ``train.grad_clip_norm`` ask for, or None.

    Args:
        train_opt (dict): The ``train`` section of the options.

    Returns:
        float | None: Max gradient norm, or None when clipping is off.

    Raises:
        OptionError: For a norm given without ``use_grad_clip``, a non-boolean switch or a non-positive norm.
    """
    use = train_opt.get('use_grad_clip')
    norm = train_opt.get('grad_clip_norm')
    if use is None:
        if norm is not None:
            raise OptionError(f'train.grad_clip_norm is {norm} but train.use_grad_clip is not set; add '
                              '`use_grad_clip: true` to clip (or remove grad_clip_norm).')
        return None
    if not isinstance(use, bool):
        raise OptionError(f'train.use_grad_clip must be true or false, got {use!r}.')
    if not use:
        return None
    if norm is None:
        return DEFAULT_GRAD_CLIP_NORM
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not norm > 0:
        raise OptionError(f'train.grad_clip_norm must be a positive number, got {norm!r}.')
    return float(norm)


def attach_grad_clip(optimizer, max_norm):
    """Clip the total gradient norm of ``optimizer``'s parameters to ``max_norm`` before each of its steps.

    Args:
        optimizer (torch.optim.Optimizer): The optimizer; all its parameter groups are clipped together.
        max_norm (float): Max total L2 norm of the gradients.

    Returns:
        torch.utils.hooks.RemovableHandle: Call ``remove()`` on it to stop clipping.
    """

    def clip(opt, args, kwargs):
        torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group['params']], max_norm)

    return optimizer.register_step_pre_hook(clip)


# --------------------------------------------------------------------------------------------------------------
# schedulers
# --------------------------------------------------------------------------------------------------------------
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
    ends = list(_cumulative(periods))
    iteration = min(max(iteration, 0), ends[-1])
    idx = bisect.bisect_left(ends, iteration)
    start = ends[idx - 1] if idx > 0 else 0
    progress = (iteration - start) / periods[idx]
    eta_min = eta_mins[idx]
    return eta_min + restart_weights[idx] * 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * progress))


def _cumulative(values):
    total = 0
    for value in values:
        total += value
        yield total


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
                          f'{_did_you_mean(sched_type, list(SCHEDULERS))} Valid types: {", ".join(SCHEDULERS)}.')
    for optimizer in self.optimizers:
        try:
            self.schedulers.append(SCHEDULERS[sched_type](optimizer, **sched_opt))
        except (TypeError, ValueError) as err:
            raise OptionError(f'train.scheduler ({sched_type}): {err}') from None


# --------------------------------------------------------------------------------------------------------------
# progressive patch training
# --------------------------------------------------------------------------------------------------------------
class ProgressivePatches:
    """Progressive patch training: the patch and batch size of each training iteration, and the crop itself.

    Stage i lasts ``iters[i]`` iterations; iteration n (1-based, as BasicSR counts) belongs to the first stage
    whose cumulative end is >= n, and iterations past the last end stay in the last stage.

    Args:
        iters (list[int]): Length of each stage, in iterations.
        gt_sizes (list[int]): GT patch size of each stage (the lq patch is gt_size / scale).
        mini_batch_sizes (list[int]): Samples kept (the first ones of the batch) in each stage.
    """

    def __init__(self, iters, gt_sizes, mini_batch_sizes):
        self.iters = list(iters)
        self.gt_sizes = list(gt_sizes)
        self.mini_batch_sizes = list(mini_batch_sizes)
        self.ends = list(_cumulative(self.iters))
        self.current_stage = None  # the stage last logged
        self.pending_iter = None  # set by update_learning_rate, consumed by the next feed_data

    @classmethod
    def from_options(cls, opt):
        """The schedule of ``opt['train']['progressive']``, checked against the training dataset; None if unset.

        Args:
            opt (dict): Full options (``train``, ``datasets.train``, ``scale``).

        Returns:
            ProgressivePatches | None: The schedule.

        Raises:
            OptionError: When an option is missing, malformed, or asks for more than the loader delivers.
        """
        dataset_opt = (opt.get('datasets') or {}).get('train') or {}
        misplaced = [k for k in PROGRESSIVE_KEYS if k in dataset_opt]
        prog = (opt.get('train') or {}).get('progressive')
        if prog is None:
            if misplaced:
                raise OptionError(f'datasets.train has {", ".join(misplaced)} (where Restormer keeps them), which '
                                  'nothing reads here: move iters, gt_sizes and mini_batch_sizes to '
                                  'train.progressive.')
            return None
        if not isinstance(prog, dict):
            raise OptionError(f'train.progressive must be a mapping with {", ".join(PROGRESSIVE_KEYS)}.')
        unknown = [k for k in prog if k not in PROGRESSIVE_KEYS]
        missing = [k for k in PROGRESSIVE_KEYS if k not in prog]
        if unknown or missing:
            raise OptionError(f'train.progressive takes exactly {", ".join(PROGRESSIVE_KEYS)}; '
                              f'unknown: {", ".join(map(str, unknown)) or "none"}; '
                              f'missing: {", ".join(missing) or "none"}.')
        for key in PROGRESSIVE_KEYS:
            values = prog[key]
            if (not isinstance(values, (list, tuple)) or not values
                    or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values)):
                raise OptionError(f'train.progressive.{key} must be a non-empty list of positive integers, '
                                  f'got {values!r}.')
        lengths = {key: len(prog[key]) for key in PROGRESSIVE_KEYS}
        if len(set(lengths.values())) != 1:
            raise OptionError('train.progressive: iters, gt_sizes and mini_batch_sizes need one entry per stage; '
                              f'got {lengths["iters"]}, {lengths["gt_sizes"]} and {lengths["mini_batch_sizes"]}.')
        if misplaced:
            raise OptionError(f'datasets.train has {", ".join(misplaced)} besides train.progressive; keep them '
                              'only in train.progressive.')

        gt_size = dataset_opt.get('gt_size')
        too_big = [s for s in prog['gt_sizes'] if gt_size is not None and s > gt_size]
        if too_big:
            raise OptionError(f'train.progressive.gt_sizes {too_big} exceed datasets.train.gt_size ({gt_size}): the '
                              'loader must deliver the largest patch, which each stage crops.')
        batch = dataset_opt.get('batch_size_per_gpu')
        too_many = [b for b in prog['mini_batch_sizes'] if batch is not None and b > batch]
        if too_many:
            raise OptionError(f'train.progressive.mini_batch_sizes {too_many} exceed datasets.train.'
                              f'batch_size_per_gpu ({batch}): the loader must deliver the largest batch.')
        scale = opt.get('scale', 1)
        odd = [s for s in prog['gt_sizes'] if s % scale]
        if odd:
            raise OptionError(f'train.progressive.gt_sizes {odd} are not multiples of scale ({scale}).')
        return cls(prog['iters'], prog['gt_sizes'], prog['mini_batch_sizes'])

    def stage(self, current_iter):
        """Index of the stage that iteration ``current_iter`` (1-based) belongs to."""
        return min(bisect.bisect_left(self.ends, current_iter), len(self.ends) - 1)

    def crop(self, lq, gt, current_iter):
        """Crop a training batch to the patch and mini-batch of ``current_iter``'s stage.

        Args:
            lq (Tensor): Input batch, (b, ..., h, w).
            gt (Tensor | None): Target batch, (b, ..., h * scale, w * scale).
            current_iter (int): Training iteration, 1-based.

        Returns:
            tuple[Tensor, Tensor | None]: lq and gt cut to the first mini_batch samples, cropped at one random
            location (the same for every sample and for lq and gt).
        """
        stage = self.stage(current_iter)
        gt_size, mini_batch = self.gt_sizes[stage], self.mini_batch_sizes[stage]
        if stage != self.current_stage:
            get_root_logger().info(f'Progressive training, iter {current_iter}: stage {stage + 1}/{len(self.ends)}, '
                                   f'patch size {gt_size}, mini-batch {mini_batch}.')
            self.current_stage = stage
        h, w = lq.shape[-2:]
        scale = 1
        if gt is not None:
            scale = gt.shape[-1] // w
            if scale < 1 or tuple(gt.shape[-2:]) != (h * scale, w * scale):
                raise ValueError(f'Progressive training: gt {tuple(gt.shape[-2:])} is not an integer multiple of '
                                 f'lq {tuple(lq.shape[-2:])}.')
        if gt_size % scale:
            raise ValueError(f'Progressive training: patch size {gt_size} is not a multiple of the scale {scale}.')
        size = gt_size // scale
        if size > h or size > w:
            raise ValueError(f'Progressive training: patch size {gt_size} (stage {stage + 1}, train.progressive.'
                             f'gt_sizes) is larger than the training batch ({h * scale} x {w * scale}).')
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        lq = lq[:mini_batch, ..., top:top + size, left:left + size]
        if gt is not None:
            gt = gt[:mini_batch, ..., top * scale:(top + size) * scale, left * scale:(left + size) * scale]
        return lq, gt

    def attach(self, model):
        """Wrap ``model.update_learning_rate`` and ``model.feed_data`` of this one instance (see the module doc)."""
        cls = type(model)

        @functools.wraps(cls.update_learning_rate)
        def update_learning_rate(current_iter, *args, **kwargs):
            cls.update_learning_rate(model, current_iter, *args, **kwargs)
            self.pending_iter = current_iter

        @functools.wraps(cls.feed_data)
        def feed_data(data, *args, **kwargs):
            cls.feed_data(model, data, *args, **kwargs)
            current_iter, self.pending_iter = self.pending_iter, None
            if current_iter is None:
                return
            if getattr(model, 'lq', None) is None:
                raise AttributeError(f'Progressive training crops self.lq (and self.gt) after feed_data, but '
                                     f'{cls.__name__}.feed_data did not set self.lq.')
            model.lq, gt = self.crop(model.lq, getattr(model, 'gt', None), current_iter)
            if gt is not None:
                model.gt = gt

        model.update_learning_rate = update_learning_rate
        model.feed_data = feed_data
        model.progressive_patches = self


# --------------------------------------------------------------------------------------------------------------
# installation
# --------------------------------------------------------------------------------------------------------------
def _with_training_ext(init):

    @functools.wraps(init)
    def __init__(self, opt, *args, **kwargs):
        init(self, opt, *args, **kwargs)
        if self.is_train:
            grad_clip_norm(opt.get('train') or {})
            schedule = ProgressivePatches.from_options(opt)
            if schedule is not None:
                schedule.attach(self)

    __init__.skd_training_ext = True
    return __init__


def install():
    """Give ``BaseModel`` (hence every BasicSR model) the extensions of this module. Safe to call more than once."""
    BaseModel.get_optimizer = get_optimizer
    BaseModel.setup_schedulers = setup_schedulers
    if not getattr(BaseModel.__init__, 'skd_training_ext', False):
        BaseModel.__init__ = _with_training_ext(BaseModel.__init__)
