"""Checkpoints: weights-only loading, the resume of the newest complete state, frozen networks kept, and
temporaries of an interrupted save removed."""
import collections
import os

import pytest
import torch

import skd_basicsr  # noqa: F401
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform import checkpoint
from skd_basicsr.platform.checkpoint import load_resume_state


class _Payload:

    def __reduce__(self):
        return (os.system, ('true',))


def test_safe_torch_load_refuses_code_and_accepts_training_states(tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'params': _Payload()}, evil)
    with pytest.raises(OptionError, match='cannot be loaded as weights only'):
        checkpoint.safe_torch_load(str(evil))
    with pytest.raises(OptionError, match='no such file'):
        checkpoint.safe_torch_load(str(tmp_path / 'missing.pth'))

    state_path = tmp_path / '4.state'
    sched = {'milestones': collections.Counter([2, 4]), 'last_epoch': 4}
    torch.save({'iter': 4, 'epoch': 1, 'schedulers': [sched], 'optimizers': []}, state_path)
    assert checkpoint.safe_torch_load(str(state_path))['schedulers'][0]['milestones'] == sched['milestones']


def test_resume_keeps_the_teacher_weights(tmp_path):
    states = tmp_path / 'training_states'
    states.mkdir()
    for it in (2, 10, 4):
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')
    opt = {'name': 'x', 'auto_resume': True, 'network_g': {}, 'network_t': {},
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models'), 'resume_state': None,
                    'pretrain_network_t': 'teacher.pth', 'param_key_t': 'params_ema', 'param_key_g': 'params_ema'}}
    state = load_resume_state(opt)
    assert state['iter'] == 10
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_10.pth')
    assert opt['path']['param_key_g'] == 'params'
    assert opt['path']['pretrain_network_t'] == 'teacher.pth' and opt['path']['param_key_t'] == 'params_ema'


def test_resume_without_state_is_a_fresh_start(tmp_path):
    opt = {'name': 'x', 'auto_resume': True, 'path': {'training_states': str(tmp_path / 'none')}}
    assert load_resume_state(opt) is None


def test_temporaries_of_an_interrupted_save_are_removed_at_start(tmp_path):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    torch.save({'iter': 2, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / '2.state')
    (states / '4.state.tmp4242').write_bytes(b'\x80half a state')
    (models / 'net_g_4.pth.tmp4242').write_bytes(b'\x80half a network')
    (models / 'notes.tmp1').write_text('not ours')
    opt = {'name': 'x', 'auto_resume': True, 'rank': 0, 'network_g': {},
           'path': {'training_states': str(states), 'models': str(models), 'resume_state': None}}
    assert load_resume_state(opt)['iter'] == 2
    assert sorted(os.listdir(states)) == ['2.state'] and sorted(os.listdir(models)) == ['notes.tmp1']


def test_a_save_that_fails_midway_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):

    def half_then_fail(obj, f):
        f.write(b'\x80half')  # into the open temporary file
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', half_then_fail)
    with pytest.raises(OSError, match='disk full'):
        checkpoint.atomic_torch_save({'iter': 4}, str(tmp_path / '4.state'))
    assert os.listdir(tmp_path) == []
