"""Gradient accumulation for every BasicSR model: ``train.accum_iter: N``.

Restormer's recipe trains with 8 GPUs x ``[8, 5, 4, 2, 1, 1]`` images per step; one GPU holds one of those 8 parts.
With ``accum_iter: N`` each training iteration of BasicSR's loop is one optimizer step over N micro-batches of
``batch_size_per_gpu`` images each, run one after the other, so a step sees N times the images with the memory of
one micro-batch, and a file reaches the same images per step on 1, 2 or 8 GPUs (``accum_iter`` 8, 4, 1).

How it works, and why this way:

* **Counting.** An iteration is an optimizer step, so ``total_iter``, the scheduler, ``warmup_iter``, ``val_freq``,
  ``print_freq``, ``save_checkpoint_freq`` and the progressive stages all count steps, unchanged.
* **Loading.** BasicSR's loop feeds one loader batch per iteration, so the training loader delivers
  ``N x batch_size_per_gpu`` images (:func:`loading_micro_batches` wraps ``create_train_val_dataloader``, so
  BasicSR's epoch arithmetic counts steps too); ``batch_size_per_gpu`` in the options stays the micro-batch.
* **Micro-batches.** The loader batch is cut into N micro-batches, each cropped by the progressive stage (to its
  own ``mini_batch`` and its own random location) and mixed on its own, exactly as each of N GPUs would crop and
  mix its own batch (:mod:`skd_basicsr.platform.training_batch`).
* **One step.** The model's own ``optimize_parameters`` runs once per micro-batch, unchanged, inside
  :meth:`MicroSteps.step`: every optimizer's ``zero_grad`` runs only before the first micro-batch and its ``step``
  only after the last, which first divides the summed gradients by N (so a mean-reduced loss gives the gradient of
  the mean over all N x B images, before any clipping); the once-per-step methods (``model_ema``, and those a model
  lists in ``once_per_step``) are skipped before the last; and under DDP every wrapped network runs the first N - 1
  backward passes under ``no_sync()``, so gradients are all-reduced once per step.
* **Mixed precision.** Under ``train.amp`` every micro-batch runs its passes under autocast; under fp16 each
  micro-batch's loss is scaled by the step's one loss scale, and the optimizer's guard unscales the summed gradients
  once, after their division by N, and updates the scale once per step (:mod:`skd_basicsr.platform.precision`).
* **Logs.** The logged losses are the mean over the micro-batches.

For a network without batch statistics and losses that are means over the batch, N micro-batches of B give the
step one batch of N x B gives (up to float rounding; tested). L_CL's ratio of batch means is the exception: its
micro-batch ratios are averaged, which is close to, but not exactly, the ratio over N x B images.
"""
import contextlib
import functools

from torch.nn.parallel import DistributedDataParallel

from skd_basicsr.platform.errors import OptionError


def accum_iter(train_opt):
    """The number of micro-batches per optimizer step that ``train.accum_iter`` asks for (1 when unset).

    Raises:
        OptionError: When it is not a positive integer.
    """
    value = (train_opt or {}).get('accum_iter', 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f'train.accum_iter must be a positive integer (micro-batches per optimizer step), got '
                          f'{value!r}.')
    return value


def loading_micro_batches(create_train_val_dataloader):
    """BasicSR's ``create_train_val_dataloader`` whose training loader delivers ``accum_iter`` micro-batches at once.

    ``datasets.train.batch_size_per_gpu`` is multiplied only while the loaders are built, so BasicSR's training
    statistics (iterations per epoch, epochs) count optimizer steps, and the models see the micro-batch size.
    """

    @functools.wraps(create_train_val_dataloader)
    def create(opt, logger):
        count = accum_iter(opt.get('train'))
        train_opt = (opt.get('datasets') or {}).get('train')
        if count == 1 or train_opt is None:
            return create_train_val_dataloader(opt, logger)
        micro = train_opt['batch_size_per_gpu']
        train_opt['batch_size_per_gpu'] = micro * count
        try:
            result = create_train_val_dataloader(opt, logger)
        finally:
            train_opt['batch_size_per_gpu'] = micro
        world = opt.get('world_size', 1)
        logger.info(f'Gradient accumulation (train.accum_iter: {count}): each iteration is one optimizer step over '
                    f'{count} micro-batches of batch_size_per_gpu {micro}: {micro * count} images per GPU, '
                    f'{micro * count * world} on {world} GPU(s), before train.progressive cuts them.')
        return result

    return create


def split(lq, gt, count):
    """Cut a loader batch into ``count`` equal micro-batches, as (lq, gt) pairs (gt may be None)."""
    size, rest = divmod(lq.shape[0], count)
    if rest or not size:
        raise ValueError(f'train.accum_iter {count}: a training batch of {lq.shape[0]} cannot be cut into {count} '
                         'equal micro-batches.')
    lqs = lq.split(size)
    gts = gt.split(size) if gt is not None else [None] * count
    return list(zip(lqs, gts))


class MicroSteps:
    """One optimizer step of a model over several micro-batches (see the module doc).

    Args:
        model (BaseModel): The model; its ``optimizers`` are the ones stepped.
        count (int): Micro-batches per step.
    """

    ONCE_PER_STEP = ('model_ema', )  # BasicSR's own, after the step

    def __init__(self, model, count):
        self.model = model
        self.count = count

    def ddp_networks(self):
        return [value for value in vars(self.model).values() if isinstance(value, DistributedDataParallel)]

    @contextlib.contextmanager
    def step(self, index):
        """Run micro-batch ``index`` (0-based) of the step: zero_grad only first, step (of the mean) only last."""
        first, last = index == 0, index == self.count - 1
        replaced = []

        def replace(owner, name, value):
            replaced.append((owner, name, vars(owner).get(name, _ABSENT)))
            setattr(owner, name, value)

        for optimizer in self.model.optimizers:
            if not first:
                replace(optimizer, 'zero_grad', _skip)
            replace(optimizer, 'step', self.mean_step(optimizer) if last else _skip)
        if not last:
            for name in self.ONCE_PER_STEP + tuple(getattr(self.model, 'once_per_step', ())):
                replace(self.model, name, _skip)
        try:
            with contextlib.ExitStack() as stack:
                if not last:
                    for net in self.ddp_networks():
                        stack.enter_context(net.no_sync())
                yield
        finally:
            for owner, name, previous in reversed(replaced):
                if previous is _ABSENT:
                    delattr(owner, name)
                else:
                    setattr(owner, name, previous)

    def mean_step(self, optimizer):
        """``optimizer.step`` that first divides the gradients summed over the micro-batches by their number."""
        step = optimizer.step

        @functools.wraps(step)
        def mean_then_step(*args, **kwargs):
            for group in optimizer.param_groups:
                for param in group['params']:
                    if param.grad is not None:
                        param.grad.div_(self.count)
            return step(*args, **kwargs)

        return mean_then_step

    def zero_grad(self):
        """Clear the gradients of every optimizer for real (a step given up part way)."""
        for optimizer in self.model.optimizers:
            optimizer.zero_grad()


def mean_logs(logs):
    """The mean of each logged value over the micro-batches that logged it, in the first log's order."""
    keys = list(dict.fromkeys(key for log in logs for key in log))
    return type(logs[0])((key, sum(log[key] for log in logs if key in log) / sum(key in log for log in logs))
                         for key in keys)


_ABSENT = object()


def _skip(*args, **kwargs):
    return None
