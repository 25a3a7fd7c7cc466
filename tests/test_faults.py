"""Faults a long run meets (issue 22): a non-finite gradient behind a finite loss, steps skipped forever, a crash
that leaves the newest training state empty or truncated, and checkpoints that must reach the disk."""
import copy
import os

import pytest
import torch

import skd_basicsr  # noqa: F401  (compat and registries, before basicsr)
from basicsr.models import build_model
from skd_basicsr.platform import checkpoint
from skd_basicsr.platform.checkpoint import load_resume_state
from skd_basicsr.platform.errors import OptionError

from helpers import basicsr_log, noisy_batch, ridnet_options, skd_model_opt, write_noisy_pairs


def sr_model_opt(tmp_path):
    """A plain BasicSR SRModel (RIDNet) completed as parse_options completes it for training."""
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), size=32)
    opt = ridnet_options('tiny_SR', gt, lq)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False, num_gpu=0)
    root = tmp_path / 'experiments' / opt['name']
    opt['path'].update(experiments_root=str(root), models=str(root / 'models'),
                       training_states=str(root / 'training_states'), log=str(root), visualization=str(root / 'vis'))
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(phase=phase, scale=1)
    return opt


MODELS = {'SRModel': sr_model_opt, 'SKDModel': skd_model_opt}


def nan_gradient_hook(model):
    """A hook that makes the gradient of the student's first parameter NaN: the loss stays finite, so only the
    gradient guard can see it."""
    param = next(model.get_bare_model(model.net_g).parameters())
    return param.register_hook(lambda grad: torch.full_like(grad, float('nan')))


def snapshot(model):
    weights = copy.deepcopy(model.get_bare_model(model.net_g).state_dict())
    return weights, copy.deepcopy(model.optimizer_g.state_dict())


def assert_unchanged(model, before):
    weights, optimizer = before
    for name, value in model.get_bare_model(model.net_g).state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert str(model.optimizer_g.state_dict()['state']) == str(optimizer['state'])


@pytest.mark.parametrize('model_type', sorted(MODELS))
def test_a_nan_gradient_behind_a_finite_loss_stops_before_the_step(model_type, tmp_path):
    model = build_model(MODELS[model_type](tmp_path))
    model.feed_data(noisy_batch())
    model.optimize_parameters(1)  # one good step: the optimizer has a state to keep
    nan_gradient_hook(model)
    before = snapshot(model)
    model.feed_data(noisy_batch(seed=1))
    with pytest.raises(FloatingPointError, match=r'iter 2: the gradient became non-finite; training stopped before '
                                                 r'the step, so no weight was touched. Last good checkpoint: none yet'):
        model.optimize_parameters(2)
    assert_unchanged(model, before)


@pytest.mark.parametrize('model_type', sorted(MODELS))
def test_a_nan_gradient_is_skipped_with_nothing_moved_and_the_run_goes_on(model_type, tmp_path):
    opt = MODELS[model_type](tmp_path)
    opt['train'].update(skip_nonfinite=True, ema_decay=0.5)
    model = build_model(opt)
    model.feed_data(noisy_batch())
    model.optimize_parameters(1)
    handle = nan_gradient_hook(model)
    before = snapshot(model)
    ema_before = copy.deepcopy(model.net_g_ema.state_dict())
    model.feed_data(noisy_batch(seed=1))
    with basicsr_log() as records:
        model.optimize_parameters(2)
    assert_unchanged(model, before)
    for name, value in model.net_g_ema.state_dict().items():  # the EMA does not move after a skipped step either
        assert torch.equal(value, ema_before[name]), name
    assert 'iter 2: non-finite gradient (total norm nan); step skipped on every rank (train.skip_nonfinite).' in records
    assert model.skipped_in_a_row == 1
    handle.remove()
    model.feed_data(noisy_batch(seed=2))
    model.optimize_parameters(3)  # the next good step steps, and the count starts again
    assert any(not torch.equal(v, before[0][k]) for k, v in model.get_bare_model(model.net_g).state_dict().items())
    assert model.skipped_in_a_row == 0


def test_more_skipped_steps_in_a_row_than_allowed_stop_the_run(tmp_path):
    opt = sr_model_opt(tmp_path)
    opt['train'].update(skip_nonfinite=True, max_skipped_steps=2)
    model = build_model(opt)
    nan_gradient_hook(model)
    for it in (1, 2):
        model.feed_data(noisy_batch(seed=it))
        model.optimize_parameters(it)
    model.feed_data(noisy_batch(seed=3))
    with pytest.raises(FloatingPointError, match=r'iter 3: 3 steps in a row were skipped, more than '
                                                 r'train.max_skipped_steps \(2\); the last because the gradient'):
        model.optimize_parameters(3)


@pytest.mark.parametrize('value', [-1, 1.5, True])
def test_max_skipped_steps_is_checked_at_start(tmp_path, value):
    opt = sr_model_opt(tmp_path)
    opt['train']['max_skipped_steps'] = value
    with pytest.raises(OptionError, match=rf'train.max_skipped_steps must be an integer >= 0, got {value!r}'):
        build_model(opt)


def test_clipping_still_clips_through_the_guard(tmp_path):
    opt = sr_model_opt(tmp_path)
    opt['train'].update(use_grad_clip=True, grad_clip_norm=1e-3)
    model = build_model(opt)
    seen = []
    model.optimizer_g.register_step_pre_hook(lambda opt, args, kwargs: seen.append(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for g in opt.param_groups for p in g['params']
                     if p.grad is not None]))))
    model.feed_data(noisy_batch())
    model.optimize_parameters(1)
    assert float(seen[0]) == pytest.approx(1e-3, rel=1e-3)


def write_states(states, iters):
    states.mkdir(parents=True)
    for it in iters:
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')


@pytest.mark.parametrize('damage', ['empty', 'truncated'])
def test_auto_resume_falls_back_from_a_newest_state_that_does_not_load(tmp_path, damage, capsys):
    states = tmp_path / 'training_states'
    write_states(states, (2, 4, 6))
    newest = states / '6.state'
    newest.write_bytes(b'' if damage == 'empty' else newest.read_bytes()[:40])
    opt = {'name': 'x', 'auto_resume': True, 'rank': 0, 'network_g': {},
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models'), 'resume_state': None}}
    state = load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'] == str(states / '4.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_4.pth')
    out = capsys.readouterr().out
    assert f'--auto_resume: skipped {newest}, which does not load' in out and 'kept as' in out
    # kept for inspection under another name, so that the next start does not try it again
    assert sorted(os.listdir(states)) == ['2.state', '4.state', '6.state.unreadable']


def test_no_loadable_state_is_a_fresh_start_that_keeps_the_files(tmp_path):
    states = tmp_path / 'training_states'
    write_states(states, (2, ))
    (states / '2.state').write_bytes(b'')
    opt = {'name': 'x', 'auto_resume': True, 'rank': 0, 'network_g': {},
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models'), 'resume_state': None}}
    assert load_resume_state(opt) is None
    assert os.listdir(states) == ['2.state.unreadable']


def test_checkpoints_are_fsynced_with_their_folder(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(os.readlink(f'/proc/self/fd/{fd}')) or fsync(fd))
    checkpoint.atomic_torch_save({'iter': 4}, str(tmp_path / '4.state'))
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / '4.state.tmp')) and synced[1] == str(tmp_path)
    assert os.listdir(tmp_path) == ['4.state']
