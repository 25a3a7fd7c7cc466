"""Checkpoints that cannot be half-written, never hold NaN, and load without unpickling code; for every model.

BasicSR 1.4.2 writes ``net_*.pth`` and ``<iter>.state`` in place (a kill during the write leaves a truncated file
that ``--auto_resume`` then picks up) and loads networks with a plain ``torch.load``. :func:`install` replaces
``BaseModel.save_network``, ``save_training_state`` and ``load_network`` with versions that keep BasicSR's file
format, names and ``param_key`` behaviour but write to a temporary file and rename it, refuse to write non-finite
weights, and read with ``weights_only=True``. Models that need more in their training state (SKDModel's adapters)
extend :meth:`get_training_state`.
"""
import os
from os import path as osp

import torch
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from skd_basicsr.compat import OptionError, safe_torch_load


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def check_finite(state_dict, what):
    """Raise when a state_dict holds NaN or infinity: such a checkpoint must never replace a good one."""
    bad = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and
           not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f'Not writing {what}: {len(bad)} tensor(s) hold NaN or infinity, first {bad[:3]}.')


@master_only
def save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's ``save_network`` (same file, same keys), written atomically and only with finite weights."""
    label = 'latest' if current_iter == -1 else current_iter
    save_path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'{len(nets)} networks but {len(keys)} param keys.')
    save_dict = {}
    for net_, key in zip(nets, keys):
        state = {k[7:] if k.startswith('module.') else k: v.cpu()
                 for k, v in self.get_bare_model(net_).state_dict().items()}
        check_finite(state, save_path)
        save_dict[key] = state
    atomic_torch_save(save_dict, save_path)


def get_training_state(self, epoch, current_iter):
    """What BasicSR keeps to resume: epoch, iteration, optimizer and scheduler states."""
    return {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers]}


@master_only
def save_training_state(self, epoch, current_iter):
    """BasicSR's ``save_training_state``, written atomically."""
    if current_iter == -1:
        return
    atomic_torch_save(self.get_training_state(epoch, current_iter),
                      osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR's ``load_network`` (``params_ema`` falls back to ``params``; ``module.`` prefixes dropped), reading
    with ``weights_only=True`` and saying what the file has when ``param_key`` is missing."""
    state = safe_torch_load(load_path)
    if param_key is not None:
        if param_key not in state and 'params' in state:
            get_root_logger().info(f'Loading: {param_key} does not exist in {load_path}, use params.')
            param_key = 'params'
        if param_key not in state:
            raise OptionError(f'{load_path}: no param key {param_key!r}; the file has {list(state)[:10]}.')
        state = state[param_key]
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    net = self.get_bare_model(net)
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    self._print_different_keys_loading(net, state, strict)
    net.load_state_dict(state, strict=strict)


def install():
    """Put these on BasicSR's BaseModel, so every model (SRModel, SKDModel, BasicSR's others) uses them."""
    BaseModel.save_network = save_network
    BaseModel.get_training_state = get_training_state
    BaseModel.save_training_state = save_training_state
    BaseModel.load_network = load_network
