"""Checkpoints: written whole and finite, read without unpickling code, found and resumed; for every model.

BasicSR 1.4.2 writes ``net_*.pth`` and ``<iter>.state`` in place (a kill during the write leaves a truncated file
that ``--auto_resume`` then picks up) and loads networks and states with a plain ``torch.load``. The functions here
keep BasicSR's file format, names and ``param_key`` behaviour but write to a temporary file and rename it
(:func:`atomic_torch_save`), refuse to write non-finite weights, and read with ``weights_only=True``
(:func:`safe_torch_load`). A kill during a save can leave only a ``*.tmp<pid>`` file, which the next start removes
(:func:`remove_orphaned_temporaries`). :mod:`skd_basicsr.platform.patches` puts ``save_network``,
``get_training_state``, ``save_training_state`` and ``load_network`` on BasicSR's ``BaseModel`` and
:func:`load_resume_state` in its train pipeline. Models that need more in their training state (SKDModel's
adapters) extend :meth:`get_training_state`.
"""
import collections
import os
import re
from os import path as osp

import torch
from basicsr.utils import get_root_logger

from skd_basicsr.platform.errors import OptionError

TEMPORARY_SUFFIX = re.compile(r'\.(pth|state)\.tmp\d+$')


# --------------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------------
def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file in the same folder, then rename: a kill never leaves half a file.

    The file is fsynced before the rename and its folder after it, so that after a power loss the name points at the
    whole file (or at the previous one), never at an empty one.
    """
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(osp.dirname(osp.abspath(path)))
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def fsync_folder(folder):
    """fsync a folder, so that a rename in it survives a power loss (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def nonfinite_tensors(state_dict):
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or infinity."""
    return [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and
            not torch.isfinite(v).all()]


def check_finite(state_dict, what):
    """Raise when a state_dict holds NaN or infinity: such a checkpoint must never replace a good one."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise FloatingPointError(f'Not writing {what}: {len(bad)} tensor(s) hold NaN or infinity, first {bad[:3]}.')


def _strip_ddp_prefix(state_dict):
    return collections.OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state_dict.items())


def save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's ``save_network`` (same file, same keys), written atomically and only with finite weights.

    Every rank checks its weights and the ranks agree (one all-reduce) before rank 0 writes: weights that cannot be
    written stop every rank with the same error, instead of rank 0 alone while the others wait in their next
    all-reduce until the timeout.
    """
    from skd_basicsr.platform.nonfinite import finite_on_every_rank

    label = 'latest' if current_iter == -1 else current_iter
    save_path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'{len(nets)} networks but {len(keys)} param keys.')
    states = [_strip_ddp_prefix(self.get_bare_model(net_).state_dict()) for net_ in nets]
    if self.opt.get('dist', False):
        finite = not any(nonfinite_tensors(state) for state in states)
        if not finite_on_every_rank(torch.tensor(1.0 if finite else float('nan')), True):
            raise FloatingPointError(f'Not writing {save_path}: the weights of {net_label} hold NaN or infinity on at '
                                     'least one rank; every rank stops, and the checkpoints written before are kept.')
    else:
        for state in states:
            check_finite(state, save_path)
    if self.opt.get('rank', 0) != 0:
        return
    atomic_torch_save({key: {k: v.cpu() for k, v in state.items()} for state, key in zip(states, keys)}, save_path)


def get_training_state(self, epoch, current_iter):
    """What BasicSR keeps to resume: epoch, iteration, optimizer and scheduler states; and the training precision's
    state (the fp16 loss scale, :mod:`skd_basicsr.platform.precision`), restored by
    :func:`skd_basicsr.platform.exact_resume.resuming_position`."""
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers]}
    precision = getattr(self, 'precision', None)
    saved = precision.state_dict() if precision is not None else {}
    if saved:
        state['precision'] = saved
    return state


def save_training_state(self, epoch, current_iter):
    """BasicSR's ``save_training_state``, written atomically, with the loader's position and every rank's random
    states (:mod:`skd_basicsr.platform.exact_resume`; gathered on every rank, written by rank 0)."""
    from skd_basicsr.platform.exact_resume import training_state_position

    if current_iter == -1:
        return
    position = training_state_position(self.opt)
    if self.opt.get('rank', 0) != 0:
        return
    state = self.get_training_state(epoch, current_iter)
    state['position'] = position
    atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------
def safe_torch_load(path, map_location='cpu'):
    """``torch.load(weights_only=True)`` with BasicSR's training-state types allowed, and a clear refusal otherwise.

    Raises:
        OptionError: When the file does not exist or needs more than plain tensors and containers to load.
    """
    if not osp.isfile(path):
        raise OptionError(f'{path}: no such file.')
    try:
        # MultiStepRestartLR keeps its milestones in a Counter
        with torch.serialization.safe_globals([collections.Counter, collections.OrderedDict]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise OptionError(f'{path} cannot be loaded as weights only (plain tensors and containers): '
                          f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}. Files that need '
                          'code to be unpickled are refused; re-save it as a state_dict.') from None


def read_weights(path, param_key='params', fallback_key=None, key_option='param key'):
    """The state_dict a weights file keeps under ``param_key``, read weights-only, DDP's ``module.`` dropped.

    The one way network weights are read here: students through :func:`load_network`, the teacher through
    :meth:`SKDModel.build_teacher`.

    Args:
        path (str): The weights file.
        param_key (str | None): Key of the state_dict in the file; None when the file is the state_dict.
            Default: 'params'.
        fallback_key (str | None): Key used instead when ``param_key`` is missing (BasicSR falls back from
            ``params_ema`` to ``params``). Default: None.
        key_option (str): How error messages name ``param_key`` (the option it came from). Default: 'param key'.

    Returns:
        OrderedDict: The state_dict.

    Raises:
        OptionError: A missing or unreadable file, or no ``param_key`` in it.
    """
    state = safe_torch_load(path)
    if param_key is not None:
        if fallback_key and isinstance(state, dict) and param_key not in state and fallback_key in state:
            get_root_logger().info(f'Loading: {param_key} does not exist in {path}, use {fallback_key}.')
            param_key = fallback_key
        if not isinstance(state, dict) or param_key not in state:
            keys = list(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise OptionError(f'{path}: no {key_option} {param_key!r} in the file; it has {keys} (a key of ~ reads a '
                              'bare state_dict).')
        state = state[param_key]
    return _strip_ddp_prefix(state)


def check_fit(net, state, strict, where, strict_option='strict'):
    """Raise :class:`OptionError` when ``state`` does not fit ``net``: any shape mismatch, and with ``strict`` any
    missing or unexpected key. ``where`` (e.g. 'path.pretrain_network_t FILE does not fit network_t') opens the
    message; ``strict_option`` names the option that asked for a strict load."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f'{k}: file {tuple(state[k].shape)}, network {tuple(own[k].shape)}' for k in own
             if k in state and state[k].shape != own[k].shape]
    if wrong:
        raise OptionError(f'{where}: {len(wrong)} shape mismatch(es), first: {wrong[:3]}. Check the network options '
                          'against the config the weights were trained with.')
    if strict and (missing or unexpected):
        raise OptionError(f'{where} ({strict_option}): {len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} '
                          f'unexpected key(s) {unexpected[:5]}.')


def load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR's ``load_network`` (``params_ema`` falls back to ``params``; ``module.`` prefixes dropped; keys that
    differ logged), reading through :func:`read_weights`."""
    state = read_weights(load_path, param_key, fallback_key='params')
    net = self.get_bare_model(net)
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    self._print_different_keys_loading(net, state, strict)
    net.load_state_dict(state, strict=strict)


# --------------------------------------------------------------------------------------------------------------
# resuming
# --------------------------------------------------------------------------------------------------------------
def state_folders(opt):
    """The experiment's models and training_states folders, as BasicSR names them."""
    states = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
    models = opt['path'].get('models') or osp.join('experiments', opt['name'], 'models')
    return models, states


UNREADABLE_SUFFIX = '.unreadable'


def newest_loadable_state(opt, map_location='cpu'):
    """The newest ``<iter>.state`` that loads, and its content; (None, None) when there is none.

    Newer states that do not load (emptied or truncated by a crash) are skipped, said so, and kept for inspection:
    the master process renames each to ``<iter>.state.unreadable``, so that the next start does not try it again.
    Nothing is deleted.
    """
    state_dir = state_folders(opt)[1]
    if not osp.isdir(state_dir):
        return None, None
    iters = sorted((int(f[:-len('.state')]) for f in os.listdir(state_dir) if f.endswith('.state') and
                    f[:-6].isdigit()), reverse=True)
    for it in iters:
        path = osp.join(state_dir, f'{it}.state')
        try:
            return path, safe_torch_load(path, map_location=map_location)
        except OptionError as err:
            kept = path
            if opt.get('rank', 0) == 0:
                kept = f'{path}{UNREADABLE_SUFFIX}'
                os.replace(path, kept)
            # print, as BasicSR's check_resume does: the root logger is not set up yet
            print(f'--auto_resume: skipped {path}, which does not load ({err}); kept as {kept}. Trying the one '
                  'before.', flush=True)
    return None, None


def latest_training_state(opt):
    """Path of the newest ``<iter>.state`` under the experiment's training_states folder, or None."""
    state_dir = state_folders(opt)[1]
    if not osp.isdir(state_dir):
        return None
    iters = [int(f[:-len('.state')]) for f in os.listdir(state_dir) if f.endswith('.state') and f[:-6].isdigit()]
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def remove_orphaned_temporaries(opt):
    """Delete the ``*.pth.tmp<pid>`` and ``*.state.tmp<pid>`` files a kill during a save left behind.

    Called at start-up, before any save of this run, by the master process only.

    Returns:
        list[str]: The files removed.
    """
    if opt.get('rank', 0) != 0:
        return []
    removed = []
    for folder in state_folders(opt):
        if not osp.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if TEMPORARY_SUFFIX.search(name):
                os.remove(osp.join(folder, name))
                removed.append(osp.join(folder, name))
    if removed:
        # print, as BasicSR's check_resume does: the root logger must not be set up before train_pipeline does it
        print(f'Removed {len(removed)} temporary file(s) of a save that was interrupted: {", ".join(removed)}',
              flush=True)
    return removed


FROZEN_ON_RESUME = []  # option names of networks that are never trained; the distillation adds its teacher


def freeze_on_resume(name):
    """Declare ``name`` (an option name such as ``network_t``) a network that is never trained, hence never saved:
    resuming keeps its configured weights unless the options' ``frozen_networks`` list says otherwise."""
    if name not in FROZEN_ON_RESUME:
        FROZEN_ON_RESUME.append(name)


def load_resume_state(opt, frozen_networks=None):
    """``basicsr.train.load_resume_state``: find the state, load it weights-only, point the networks at its iteration.

    Differences from BasicSR's: ``--auto_resume`` picks the newest complete ``<iter>.state`` (temporaries of an
    interrupted save are removed first), the state loads on the CPU when training without GPUs, and the networks
    in ``frozen_networks`` (never trained, so never saved) keep their configured weights and param key.

    Args:
        opt (dict): Options; ``opt['path']`` is updated as BasicSR's ``check_resume`` does.
        frozen_networks (list[str] | None): Option names of networks that resuming must not touch; None reads the
            top-level option ``frozen_networks``, by default those declared by :func:`freeze_on_resume`.
            Default: None.

    Returns:
        dict | None: The training state, or None for a fresh start.
    """
    from basicsr.utils.misc import check_resume

    from skd_basicsr.platform.compat import resume_device

    from skd_basicsr.platform.exact_resume import POSITION

    POSITION.pending = None  # a training pipeline starts: only its own resume may set a position
    remove_orphaned_temporaries(opt)
    resume_state = None
    if opt['auto_resume']:
        path, resume_state = newest_loadable_state(opt, resume_device(opt))
        if path is not None:
            opt['path']['resume_state'] = path
    path = opt['path'].get('resume_state')
    if not path:
        return None
    if resume_state is None:
        resume_state = safe_torch_load(path, map_location=resume_device(opt))

    if frozen_networks is None:
        frozen_networks = opt.get('frozen_networks', FROZEN_ON_RESUME)
    frozen = [n for n in frozen_networks if n in opt]
    kept = {k: opt['path'][k] for n in frozen for k in (f'pretrain_{n}', f'param_key_{n[len("network_"):]}')
            if k in opt['path']}
    ignore = list(opt['path'].get('ignore_resume_networks') or [])
    opt['path']['ignore_resume_networks'] = ignore + [n for n in frozen if n not in ignore]
    check_resume(opt, resume_state['iter'])
    opt['path'].update(kept)
    return resume_state
