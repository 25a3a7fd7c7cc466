"""A loss or a gradient that is not finite: the decision every process takes together, and what the user is told.

Under DDP every rank must take the same branch: a rank that skips the backward while the others enter its gradient
all-reduce hangs the run, and ranks that step on different iterations drift apart. One all-reduce of a flag makes the
decision common before anyone steps (:func:`finite_on_every_rank`). Two checks use it, for every BasicSR model:

* SKDModel checks its total loss before the backward;
* every optimizer made by the platform (:func:`attach_step_guard`, from
  :func:`skd_basicsr.platform.optim.get_optimizer`) checks the total gradient norm, the one clipping computes, right
  before it steps: a finite loss can still give a non-finite gradient, and an optimizer that steps on it writes NaN
  into the weights.

Then :func:`skip_or_stop` skips the step (``train.skip_nonfinite: true``: no weight and no optimizer state moves,
logged) or stops the run before the step with the error of :func:`nonfinite_error`, which names what became non-finite
and the last good checkpoint. More than ``train.max_skipped_steps`` (default 100) skipped steps in a row stop the run
too: a run that skips every step trains nothing.

Under ``train.amp: fp16`` the loss is scaled before the backward (:mod:`skd_basicsr.platform.precision`). The guard
unscales the gradients first, so that the norm, the clipping and the step see their true values; a gradient that is not
finite then overflowed at the current loss scale, which is the GradScaler's normal business, not a fault:
:func:`skip_overflow` skips the step, lowers the scale and logs it, whatever ``train.skip_nonfinite`` says, and counts
it towards ``train.max_skipped_steps`` (a gradient that overflows at every scale is a run that never steps).
"""
import types

import torch

from skd_basicsr.platform import checkpoint
from skd_basicsr.platform.errors import OptionError

DEFAULT_MAX_SKIPPED_STEPS = 100


def finite_on_every_rank(value, distributed):
    """Whether ``value`` (a tensor, e.g. the total loss) is finite on every process.

    Args:
        value (Tensor): This rank's value.
        distributed (bool): Whether the run is distributed (``opt['dist']``); then the minimum of finite = 1,
            non-finite = 0 is all-reduced.
    """
    finite = torch.isfinite(value.detach()).all()
    if not distributed:
        return bool(finite)
    flag = finite.to(torch.float32).reshape(1)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def nonfinite_terms(loss_dict):
    """The names of the non-finite terms of ``loss_dict``, or 'of another rank' when all of this rank's are finite
    (every rank comes to the decision together, see :func:`finite_on_every_rank`)."""
    bad = [name for name, value in loss_dict.items() if not torch.isfinite(value).all()]
    return ', '.join(bad) if bad else 'of another rank'


def nonfinite_error(current_iter, what, opt):
    """The error that stops the run before the step: ``what`` became non-finite (e.g. 'the loss term(s) l_pix'), the
    last good checkpoint, what to do."""
    last = checkpoint.latest_training_state(opt)
    fp16 = ' Under train.amp: fp16 a forward pass can overflow float16; bf16 has float32\'s range.' if (
        opt.get('train') or {}).get('amp') == 'fp16' else ''
    return FloatingPointError(
        f'iter {current_iter}: {what} became non-finite; training stopped before '
        f'the step, so no weight was touched. Last good checkpoint: {last or "none yet"}. Lower the learning '
        'rate or the loss weights and resume with --auto_resume, or set train.skip_nonfinite: true to skip '
        f'such steps.{fp16}')


def max_skipped_steps(train_opt):
    """``train.max_skipped_steps``: skipped steps in a row after which the run stops (default 100)."""
    value = train_opt.get('max_skipped_steps', DEFAULT_MAX_SKIPPED_STEPS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(f'train.max_skipped_steps must be an integer >= 0, got {value!r}.')
    return value


def skip_or_stop(model, what, logged):
    """Skip the step on this rank (every rank comes here together) or raise :func:`nonfinite_error`.

    Args:
        model: The BasicSR model; ``model.current_iter`` is the iteration, ``model.skipped_step`` is set (under
            ``train.accum_iter`` the step's other micro-batches are given up too).
        what (str): What became non-finite, for the error ('the loss term(s) l_pix', 'the gradient').
        logged (str): The warning of a skipped step, after ``iter N: ``.
    """
    from basicsr.utils import get_root_logger

    current_iter = getattr(model, 'current_iter', '?')
    if not (model.opt.get('train') or {}).get('skip_nonfinite', False):
        raise nonfinite_error(current_iter, what, model.opt)
    count_skipped(model, f'{what} became non-finite')
    get_root_logger().warning(f'iter {current_iter}: {logged}; step skipped on every rank (train.skip_nonfinite).')


def skip_overflow(model, scaler):
    """Under fp16: the unscaled gradient overflowed at the loss scale; skip the step (every rank comes here together,
    the gradients being all-reduced), lower the scale, log it, and go on unless :func:`count_skipped` says the run has
    stopped training.

    Args:
        model: The BasicSR model (as in :func:`skip_or_stop`).
        scaler (torch.amp.GradScaler): Its scaler, after ``unscale_`` recorded the overflow.
    """
    from basicsr.utils import get_root_logger

    scale = scaler.get_scale()
    scaler.update()
    count_skipped(model, f'the fp16 gradient overflowed at loss scale {scale:g}')
    get_root_logger().warning(f'iter {getattr(model, "current_iter", "?")}: fp16 gradient overflow at loss scale '
                              f'{scale:g}; step skipped, loss scale lowered to {scaler.get_scale():g} (train.amp: '
                              'fp16).')


def count_skipped(model, because):
    """Mark this iteration's step skipped (``model.skipped_step``: under ``train.accum_iter`` the step's other
    micro-batches are given up too, and the EMA does not move) and stop the run after more than
    ``train.max_skipped_steps`` skipped steps in a row; ``because`` says why the last one was."""
    model.skipped_step = True
    model.skipped_in_a_row = getattr(model, 'skipped_in_a_row', 0) + 1
    limit = max_skipped_steps(model.opt.get('train') or {})
    if model.skipped_in_a_row > limit:
        last = checkpoint.latest_training_state(model.opt)
        raise FloatingPointError(
            f'iter {getattr(model, "current_iter", "?")}: {model.skipped_in_a_row} steps in a row were skipped, more '
            f'than train.max_skipped_steps ({limit}); the last because {because}. The run is not training. Last good '
            f'checkpoint: {last or "none yet"}; lower the learning rate or the loss weights and resume.')


def total_grad_norm(params, max_norm=None):
    """The total L2 norm of the gradients of ``params``, clipped to ``max_norm`` first when given (the norm returned
    is the one before clipping, as ``clip_grad_norm_`` returns it)."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return None
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)
    # the norm alone: clip_grad_norm_ with an infinite bound would also multiply every gradient by 1
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads]))


def attach_step_guard(optimizer, model, max_norm=None):
    """Make ``optimizer.step`` check the gradient norm on every rank first, clipping it to ``max_norm`` when given.

    A finite norm steps (and resets the count of skipped steps); a non-finite one clears the gradients and goes to
    :func:`skip_or_stop`, so that no weight and no optimizer state moves. Under fp16 (``model.precision.scaler``) the
    gradients are unscaled first, a non-finite norm goes to :func:`skip_overflow` instead, and the scale is updated
    after every step. The guard is a bound method, as PyTorch's LR schedulers expect ``optimizer.step`` to be.
    """
    step = optimizer.step

    def guarded_step(self, *args, **kwargs):
        params = [p for group in self.param_groups for p in group['params']]
        scaler = getattr(getattr(model, 'precision', None), 'scaler', None)
        scaled = scaler is not None and any(p.grad is not None for p in params)
        if scaled:
            scaler.unscale_(self)
        norm = total_grad_norm(params, max_norm)
        if norm is None or finite_on_every_rank(norm, model.opt.get('dist', False)):
            model.skipped_in_a_row = 0
            result = step(*args, **kwargs)
            if scaled:
                scaler.update()
            return result
        self.zero_grad(set_to_none=True)
        if scaled:
            skip_overflow(model, scaler)
        else:
            skip_or_stop(model, 'the gradient', f'non-finite gradient (total norm {float(norm)})')
        return None

    optimizer.step = types.MethodType(guarded_step, optimizer)
    return optimizer
