"""A loss that is not finite: the decision every process takes together, and what the user is told.

Under DDP every rank must take the same branch: a rank that skips the backward while the others enter its gradient
all-reduce hangs the run, and ranks that step on different iterations drift apart. One all-reduce of a flag makes the
decision common before anyone steps (:func:`finite_on_every_rank`). Then the step is skipped (``train.skip_nonfinite:
true``, logged) or the run stops before the step with the error of :func:`nonfinite_error`, which names the terms and
the last good checkpoint.
"""
import torch

from skd_basicsr.platform import checkpoint


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


def nonfinite_error(current_iter, where, opt):
    """The error that stops the run before the step: what became non-finite, the last good checkpoint, what to do."""
    last = checkpoint.latest_training_state(opt)
    return FloatingPointError(
        f'iter {current_iter}: the loss term(s) {where} became non-finite; training stopped before '
        f'the step, so no weight was touched. Last good checkpoint: {last or "none yet"}. Lower the learning '
        'rate or the loss weights and resume with --auto_resume, or set train.skip_nonfinite: true to skip '
        'such steps.')
