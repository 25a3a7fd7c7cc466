"""Mixed precision, channels_last, torch.compile and TF32 for every BasicSR model, as options.

Each option is checked when ``BaseModel.__init__`` runs (:func:`attach_training`, :func:`attach_validation`, from
:func:`skd_basicsr.platform.patches.checking_training_options`), before any network is built; a value the current
device cannot honour is refused there with one line saying what to do.

* ``train.amp: bf16 | fp16 | false`` (default false). The forward passes and the losses of a training step run under
  :func:`torch.autocast`; the backward, the gradients, the weights, the optimizer states, the EMA and the checkpoints
  stay float32. Under fp16 a :class:`torch.amp.GradScaler` scales each loss before its backward (each micro-batch's
  under ``train.accum_iter``, at the one scale of the step); the gradient guard of every optimizer
  (:func:`skd_basicsr.platform.nonfinite.attach_step_guard`) unscales before the norm and the clipping, and a gradient
  that overflowed at the current scale is the scaler's business: the step is skipped, the scale lowered, the skip
  logged, and the run goes on (the skip counts towards ``train.max_skipped_steps``, so a run that never steps stops).
  The scaler's state is part of the training state, so a resumed run goes on at the scale it had. Which models:
  SRModel's own step, and that of every subclass that keeps it (SwinIRModel, ...), is replaced on the instance by
  :func:`sr_step`, the same step under the precision (BasicSR's own code runs untouched when amp is off); a model
  whose ``optimize_parameters`` is marked :func:`precision_aware` (SKDModel) runs its passes under ``self.precision``
  itself; any other model is refused, as autocast cannot reach into a step it does not know.
* ``val.amp: bf16 | fp16 | false`` (default false): validation and ``basicsr test`` run ``model.test`` under autocast,
  and the output is cast back to float32 before metrics and images are made of it.
* ``train.channels_last: true``: the model's networks in channels-last memory format (NHWC convolutions, the layout
  tensor cores want).
* ``train.compile: false | default | reduce-overhead | max-autotune``: the model's networks (``net_g``, ``net_t``,
  ``net_d``, ...; not the EMA copy) compiled in place with :meth:`torch.nn.Module.compile`, so state_dict keys,
  BasicSR's save and load and ``get_bare_model`` are unchanged. Shapes are static (``dynamic=False``): with dynamic
  shapes inductor (torch 2.14) failed on Restormer at its second patch size (a TypeError deciding a stride order,
  with or without taps). Each patch size of a progressive schedule and each way a network runs (the student recording
  its taps, the teacher with and without gradient) is one compiled entry, so the recompile limit is raised to
  :data:`RECOMPILE_LIMIT`. Validation runs the networks eagerly: its images come in many sizes, each of which would
  compile anew. Forward hooks are traced into the graphs where dynamo can trace them (the feature taps can), and break
  the graph where it cannot.
* ``train.tf32: true | false``: TF32 for float32 matmuls and cuDNN convolutions on, or both off (full float32); unset,
  PyTorch's defaults stay. On the CPU it has no effect, and a warning says so.

Measured on the CPU (no GPU here), nothing of speed: what is tested is that every option trains with finite losses,
checkpoints stay float32 with their keys, the scaler skips an overflow without moving a weight and resumes at its
scale, and a compiled student's taps record what the eager one records.
"""
import contextlib
import functools
import types
from collections import OrderedDict

import torch
from torch.nn import functional as F

from skd_basicsr.platform.errors import OptionError, did_you_mean

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune')
RECOMPILE_LIMIT = 64


# --------------------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------------------
def amp_option(section, where):
    """The autocast dtype name that ``<where>`` (``train.amp`` or ``val.amp``) asks for: 'bf16', 'fp16' or None.

    Args:
        section (dict | None): The ``train`` or ``val`` section of the options.
        where (str): The option's full name, for the message.

    Raises:
        OptionError: A value other than bf16, fp16 or false.
    """
    value = (section or {}).get('amp', False)
    if value is None or value is False:
        return None
    if not isinstance(value, str) or value not in AMP_DTYPES:
        raise OptionError(f'{where} must be bf16, fp16 or false, got {value!r}.{did_you_mean(value, list(AMP_DTYPES))}')
    return value


def compile_option(train_opt):
    """The ``torch.compile`` mode that ``train.compile`` asks for, or None.

    Raises:
        OptionError: A value other than false or one of :data:`COMPILE_MODES` (``true`` included: name the mode).
    """
    value = train_opt.get('compile', False)
    if value is None or value is False:
        return None
    if value not in COMPILE_MODES:
        hint = ' Write `compile: default` for the default mode.' if value is True else did_you_mean(
            value, COMPILE_MODES)
        raise OptionError(f'train.compile must be false or one of {", ".join(COMPILE_MODES)}, got {value!r}.{hint}')
    return value


def switch_option(train_opt, name):
    """``train.<name>`` as True, False or None (unset).

    Raises:
        OptionError: A value that is not true or false.
    """
    value = train_opt.get(name)
    if value is not None and not isinstance(value, bool):
        raise OptionError(f'train.{name} must be true or false, got {value!r}.')
    return value


# --------------------------------------------------------------------------------------------------------------
# what the device can do
# --------------------------------------------------------------------------------------------------------------
def check_amp_device(name, device, where):
    """Refuse ``<where>: <name>`` where ``device`` has no autocast or no kernels for the dtype.

    A convolution and a matrix product, forward and backward, under autocast on a tiny input: what a training step
    needs, tried before anything is built. bf16 on a GPU without native bfloat16 (before compute capability 8.0) is
    refused too: PyTorch would emulate it, slower than float32.

    Raises:
        OptionError: Naming the device and the option to use instead.
    """
    other = 'fp16' if name == 'bf16' else 'bf16'
    if not torch.amp.is_autocast_available(device.type):
        raise OptionError(f'{where}: {name}: PyTorch has no autocast on {device.type}; set {where}: false.')
    if device.type == 'cuda' and name == 'bf16' and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise OptionError(f'{where}: bf16: this GPU has no native bfloat16 (compute capability below 8.0); use '
                          f'{where}: fp16.')
    x = torch.ones(1, 2, 4, 4, device=device, requires_grad=True)
    weight = torch.ones(2, 2, 3, 3, device=device)
    try:
        with torch.autocast(device.type, dtype=AMP_DTYPES[name]):
            y = F.conv2d(x, weight, padding=1).flatten(1)
            z = torch.matmul(y, y.transpose(0, 1)).sum()
        z.float().backward()
    except (RuntimeError, NotImplementedError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OptionError(f'{where}: {name}: {device.type} has no {AMP_DTYPES[name]} kernels for a training step '
                          f'({first}); use {where}: {other} or false.') from None


def check_compile_device(mode, device):
    """Refuse ``train.compile`` where torch.compile has no backend: no dynamo for this Python, no Triton for CUDA, no
    working C++ compiler for the CPU (inductor's own search: ``$CXX`` or g++, run with ``--version``).

    Raises:
        OptionError: Naming what is missing and what to do.
    """
    if not torch._dynamo.is_dynamo_supported():
        raise OptionError(f'train.compile: {mode}: torch.compile does not support this Python; set train.compile: '
                          'false.')
    if device.type == 'cuda':
        from torch.utils._triton import has_triton

        if not has_triton():
            raise OptionError(f'train.compile: {mode}: compiling for CUDA needs Triton, which is not installed or '
                              'finds no supported GPU; pip install triton, or set train.compile: false.')
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # inductor raises its InvalidCxxCompiler, or what running the compiler raised
        raise OptionError(f'train.compile: {mode}: compiling for the CPU needs a working C++ compiler, and none was '
                          f'found ({type(err).__name__}); install g++ (or set CXX), or set train.compile: '
                          'false.') from None


# --------------------------------------------------------------------------------------------------------------
# a model's training precision
# --------------------------------------------------------------------------------------------------------------
class TrainingPrecision:
    """The precision of one model's training steps (``model.precision``): autocast for the forward passes and the
    losses, and under fp16 the loss scale.

    With ``amp`` None every method does what float32 training does, so a model can use it whatever the options.

    Args:
        amp (str | None): 'bf16', 'fp16' or None.
        device (torch.device): The model's device.
    """

    def __init__(self, amp, device):
        self.amp = amp
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if amp == 'fp16' else None

    def autocast(self):
        """The context of the forward passes and the losses: autocast to the amp dtype, or nothing."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def backward(self, loss):
        """Backward of ``loss``, scaled by the loss scale under fp16; call it outside :meth:`autocast`."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def state_dict(self):
        """What a resume needs: the GradScaler's state under fp16 (scale, growth tracker), else nothing."""
        return {'grad_scaler': self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state):
        """Resume the loss scale from a training state's ``precision`` entry (``state`` may be None or empty)."""
        from basicsr.utils import get_root_logger

        saved = (state or {}).get('grad_scaler')
        if self.scaler is None:
            if saved:
                get_root_logger().info('The training state holds an fp16 loss scale; train.amp is not fp16 now, so '
                                       'it is not used.')
            return
        if saved is None:
            get_root_logger().info(f'train.amp: fp16: the training state holds no loss scale (it was written without '
                                   f'fp16); the scale starts at {self.scaler.get_scale():g}.')
            return
        self.scaler.load_state_dict(saved)


def precision_aware(optimize_parameters):
    """Mark a model's ``optimize_parameters`` that runs its forward passes and losses under
    ``self.precision.autocast()`` and its backward through ``self.precision.backward`` (SKDModel's): ``train.amp`` is
    then allowed for its model."""
    optimize_parameters.precision_aware = True
    return optimize_parameters


def sr_loss_terms(model):
    """SRModel's loss terms of ``model.output`` against ``model.gt``: the pixel loss (``l_pix``) and the perceptual and
    style losses (``l_percep``, ``l_style``) where configured, as (name, value) in BasicSR's log order."""
    terms = []
    if model.cri_pix:
        terms.append(('l_pix', model.cri_pix(model.output, model.gt)))
    if model.cri_perceptual:
        percep_style = zip(('l_percep', 'l_style'), model.cri_perceptual(model.output, model.gt))
        terms += [(name, value) for name, value in percep_style if value is not None]
    return terms


def sr_step(model, current_iter):
    """``SRModel.optimize_parameters`` under ``model.precision``: the forward pass and the losses under autocast, the
    backward of the (scaled) total outside it, the step through the optimizer's guard (which unscales), the EMA.

    It takes SRModel's place on the instances of SRModel and of its subclasses that keep its step, under ``train.amp``
    only (:func:`attach_training`).
    """
    model.optimizer_g.zero_grad()
    with model.precision.autocast():
        model.output = model.net_g(model.lq)
        loss_dict = OrderedDict(sr_loss_terms(model))
    model.precision.backward(sum(loss_dict.values()))
    model.optimizer_g.step()
    model.log_dict = model.reduce_loss_dict(loss_dict)
    if model.ema_decay > 0:
        model.model_ema(decay=model.ema_decay)


# --------------------------------------------------------------------------------------------------------------
# attaching to a model
# --------------------------------------------------------------------------------------------------------------
def attach_validation(model):
    """``val.amp``: check it and make this instance's ``test`` run under autocast, its output cast back to float32."""
    name = amp_option(model.opt.get('val'), 'val.amp')
    if name is None:
        return
    check_amp_device(name, model.device, 'val.amp')
    cls = type(model)

    @functools.wraps(cls.test)
    def test(*args, **kwargs):
        with torch.autocast(model.device.type, dtype=AMP_DTYPES[name]):
            result = cls.test(model, *args, **kwargs)
        output = getattr(model, 'output', None)
        if torch.is_tensor(output) and output.is_floating_point():
            model.output = output.float()
        return result

    model.test = test


def validation_autocast(opt, device):
    """The autocast of ``val.amp`` (checked by :func:`attach_validation`) for a forward that validation runs outside
    ``model.test``, such as the teacher's scores; nothing when it is off."""
    name = amp_option(opt.get('val'), 'val.amp')
    return torch.autocast(device.type, dtype=AMP_DTYPES[name]) if name else contextlib.nullcontext()


def attach_training(model):
    """Check ``train.amp``, ``train.channels_last``, ``train.compile`` and ``train.tf32`` against the model and its
    device, give the model its :class:`TrainingPrecision` (``model.precision``) and put the options in place.

    Under ``train.amp`` a model with SRModel's step gets :func:`sr_step` on the instance; channels_last and compile
    are applied to the networks once ``init_training_settings`` has built them (:func:`speed_up`); TF32 is switched
    at once.

    Returns:
        callable | None: The step that replaced the class's ``optimize_parameters`` on the instance
        (``(model, current_iter) -> None``), for the micro-batch loop of :mod:`skd_basicsr.platform.training_batch`;
        None when the class's own step runs.

    Raises:
        OptionError: A wrong value, or one the device or the model cannot honour.
    """
    from basicsr.models.sr_model import SRModel

    train_opt = model.opt.get('train') or {}
    amp = amp_option(train_opt, 'train.amp')
    channels_last = switch_option(train_opt, 'channels_last')
    mode = compile_option(train_opt)
    tf32 = switch_option(train_opt, 'tf32')
    step = None
    if amp is not None:
        own = type(model).optimize_parameters
        if own is SRModel.optimize_parameters:
            step = sr_step
        elif not getattr(own, 'precision_aware', False):
            raise OptionError(f'train.amp: {amp}: {type(model).__name__} has its own optimize_parameters, which '
                              'autocast cannot reach; mixed precision is built for SRModel\'s step (and subclasses '
                              'that keep it, such as SwinIRModel) and SKDModel\'s. Set train.amp: false.')
        check_amp_device(amp, model.device, 'train.amp')
    if mode is not None:
        check_compile_device(mode, model.device)
    model.precision = TrainingPrecision(amp, model.device)
    if step is not None:
        model.optimize_parameters = types.MethodType(step, model)
    if tf32 is not None:
        set_tf32(tf32, model.device)
    if channels_last or mode:
        speeding_up_after_building(model, bool(channels_last), mode)
    return step


def set_tf32(enabled, device):
    """TF32 for float32 matmuls and cuDNN convolutions on (``enabled``) or off; on the CPU a warning, no change."""
    from basicsr.utils import get_root_logger

    if device.type != 'cuda':
        get_root_logger().warning(f'train.tf32: {str(enabled).lower()} has no effect on {device.type}: TF32 is a '
                                  'format of NVIDIA tensor cores. Nothing was changed.')
        return
    precision = 'tf32' if enabled else 'ieee'
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    get_root_logger().info(f'train.tf32: {str(enabled).lower()}: float32 matmuls and cuDNN convolutions in '
                           f'{precision}.')


def speeding_up_after_building(model, channels_last, mode):
    """Make this instance's ``init_training_settings`` apply :func:`speed_up` to the networks once it has run: after
    the networks are built, the weights loaded and, for SKDModel, its taps' eager shape probe done."""
    settings = getattr(model, 'init_training_settings', None)
    if settings is None:
        raise OptionError(f'train.channels_last / train.compile: {type(model).__name__} has no '
                          'init_training_settings to apply them after; set them to false.')

    @functools.wraps(settings)
    def init_training_settings(*args, **kwargs):
        settings(*args, **kwargs)
        speed_up(model, channels_last, mode)

    model.init_training_settings = init_training_settings


def networks(model):
    """The model's networks, ``{option name: bare module}``: every ``net_<x>`` attribute (``network_<x>``), not the EMA
    copy."""
    return OrderedDict((f'network_{name[len("net_"):]}', model.get_bare_model(net))
                       for name, net in vars(model).items()
                       if name.startswith('net_') and not name.endswith('_ema') and isinstance(net, torch.nn.Module))


def speed_up(model, channels_last, mode):
    """Put the model's networks in channels-last format and/or compile them in place (see the module doc), and say so
    in the log."""
    from basicsr.utils import get_root_logger

    nets = networks(model)
    for net in nets.values():
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if mode:
            net.compile(mode=mode, dynamic=False)
    done = [what for what, on in (('channels_last', channels_last), (f'compiled (mode {mode})', mode)) if on]
    line = f'{", ".join(nets)}: {" and ".join(done)}.'
    if mode:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        hooked = {label: sum(bool(m._forward_hooks) for m in net.modules()) for label, net in nets.items()}
        line += (' Static shapes: each patch size compiles once (first iterations slow); validation runs eagerly. '
                 f'Recompile limit {torch._dynamo.config.recompile_limit}.')
        if any(hooked.values()):
            counts = ', '.join(f'{label} {count}' for label, count in hooked.items() if count)
            line += (f' Modules with forward hooks: {counts}; traced into the graphs where dynamo can, a graph break '
                     'where it cannot.')
        validating_eagerly(model)
    get_root_logger().info(line)


def validating_eagerly(model):
    """Make this instance's ``validation`` run every compiled network eagerly (``torch.compiler`` stance
    force_eager)."""
    cls = type(model)

    @functools.wraps(cls.validation)
    def validation(*args, **kwargs):
        with torch.compiler.set_stance('force_eager'):
            return cls.validation(model, *args, **kwargs)

    model.validation = validation
