"""Optimizers for every BasicSR model: any ``torch.optim`` optimizer, with gradient clipping when asked.

* ``train.optim_g.type`` may name any ``torch.optim`` optimizer (``Adam``, ``AdamW``, ``SGD``, ...);
  :func:`get_optimizer` replaces ``BaseModel.get_optimizer``, which knew only ``Adam``.
* Gradient clipping (``train.use_grad_clip``, ``train.grad_clip_norm``) and the non-finite gradient guard: every
  optimizer made by :func:`get_optimizer` computes the total gradient norm of its parameters right before it steps,
  clips it when asked, and steps only if the norm is finite on every rank
  (:func:`skd_basicsr.platform.nonfinite.attach_step_guard`), so ``optimize_parameters`` stays as the model wrote it.
  With ``use_grad_clip: true`` and no norm the norm is 0.01, the value Restormer's model code hard-codes behind the
  same switch. A model that builds an optimizer by hand can call :func:`attach_grad_clip` (clipping only) itself.
"""
import torch

from skd_basicsr.platform.errors import OptionError, did_you_mean

DEFAULT_GRAD_CLIP_NORM = 0.01


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
        torch.optim.Optimizer: The optimizer; before each step it clips gradients if ``train.use_grad_clip`` and
        checks that their norm is finite.

    Raises:
        OptionError: When ``optim_type`` is not a torch optimizer or the optimizer refuses the arguments.
    """
    names = optimizer_names()
    if optim_type not in names:
        raise OptionError(f'Unknown optimizer type {optim_type!r}.{did_you_mean(optim_type, names)} '
                          f'Valid types (torch.optim): {", ".join(names)}.')
    try:
        optimizer = getattr(torch.optim, optim_type)(params, lr=lr, **kwargs)
    except TypeError as err:
        raise OptionError(f'Optimizer {optim_type} does not accept the options given ({err}).') from None
    from skd_basicsr.platform.nonfinite import attach_step_guard

    return attach_step_guard(optimizer, self, grad_clip_norm(self.opt.get('train') or {}))


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
