"""Gradient accumulation (train.accum_iter, skd_basicsr/platform/accumulation.py): N micro-batches of B make the
step one batch of N x B makes, for SRModel and SKDModel; one optimizer step, one EMA update, one set of logs per
iteration; progressive crops and mixing per micro-batch; the loader delivers every micro-batch; resume keeps it."""
import copy
from collections import OrderedDict

import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from basicsr.models.sr_model import SRModel
from skd_basicsr import cli
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.accumulation import accum_iter, mean_logs, split
from skd_basicsr.platform.checkpoint import safe_torch_load

from helpers import ridnet_options, run_cli, skd_model_opt, write_noisy_pairs, write_options
from test_training import build, encoded_batch, make_opt


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.get_bare_model(model.net_g).parameters()])


def one_step(opt, data, seed=0, steps=1):
    torch.manual_seed(seed)
    model = build(opt)
    start = weights(model)
    for it in range(1, steps + 1):
        model.update_learning_rate(it)
        model.feed_data(data)
        model.optimize_parameters(it)
    return model, start


def batch_of(count, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(count, 3, size, size, generator=g)
    return {'lq': gt + 0.1 * torch.randn(count, 3, size, size, generator=g), 'gt': gt}


def step_difference(a, b, start):
    """The largest difference of two models' weights, relative to how far the first one moved from ``start``."""
    moved = (weights(a) - start).abs().max()
    assert moved > 1e-4
    return ((weights(a) - weights(b)).abs().max() / moved).item()


@pytest.mark.parametrize('clip', [None, 0.05])
def test_micro_batches_make_the_step_of_one_batch(tmp_path, clip):
    train = {'use_grad_clip': True, 'grad_clip_norm': clip} if clip else {}
    data = batch_of(4)
    whole, start = one_step(make_opt(tmp_path, batch=4, **train), data)
    accumulated, start_acc = one_step(make_opt(tmp_path, batch=2, accum_iter=2, **train), data)
    assert torch.equal(start, start_acc)
    # AdamW's first step is about lr * sign(grad): where a gradient is near eps, float rounding shows (SGD: 1e-5)
    assert step_difference(whole, accumulated, start) < 1e-4
    assert accumulated.log_dict['l_pix'] == pytest.approx(whole.log_dict['l_pix'], rel=1e-6)
    # one optimizer step per iteration, not one per micro-batch
    state = accumulated.optimizer_g.state_dict()['state']
    assert state and all(int(s['step']) == 1 for s in state.values())


def test_summed_gradients_would_differ(tmp_path):
    """The check above can fail: without the division by N, SGD steps as with twice the learning rate."""
    data = batch_of(4)
    sgd = {'type': 'SGD', 'lr': 0.01}
    whole, start = one_step(make_opt(tmp_path, batch=4, optim_g=sgd), data)
    doubled, _ = one_step(make_opt(tmp_path, batch=4, optim_g=dict(sgd, lr=0.02)), data)
    acc, _ = one_step(make_opt(tmp_path, batch=2, accum_iter=2, optim_g=sgd), data)
    assert step_difference(whole, acc, start) < 1e-5
    assert step_difference(whole, doubled, start) > 0.5


def test_ema_and_steps_once_per_iteration(tmp_path):
    opt = make_opt(tmp_path, batch=1, accum_iter=4, ema_decay=0.5)
    opt['path']['pretrain_network_g'] = None
    model, _ = one_step(opt, batch_of(4), steps=3)
    calls = []
    original = model.model_ema
    model.model_ema = lambda decay: calls.append(decay) or original(decay)
    model.update_learning_rate(4)
    model.feed_data(batch_of(4, seed=1))
    model.optimize_parameters(4)
    assert calls == [0.5]
    assert all(int(s['step']) == 4 for s in model.optimizer_g.state_dict()['state'].values())
    # the instance is as it was: the optimizer's own zero_grad and step, the model's own model_ema
    assert 'zero_grad' not in vars(model.optimizer_g) and 'model_ema' in vars(model)


def test_skd_micro_batches_make_the_step_of_one_batch(tmp_path):
    """SKDModel with L_REC, L_GK (per-sample kernel distances, averaged over the batch) and output-KD."""
    opt = skd_model_opt(tmp_path)
    opt['train'].pop('contrast_opt')
    opt['train']['output_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    opt['train']['optim_g'] = {'type': 'SGD', 'lr': 0.01}  # Adam's first step magnifies rounding where grad ~ eps
    opt['datasets']['train']['batch_size_per_gpu'] = 4
    data = batch_of(4)
    whole, start = one_step(copy.deepcopy(opt), data)
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['train']['accum_iter'] = 2
    accumulated, start_acc = one_step(opt, data)
    assert torch.equal(start, start_acc)
    assert step_difference(whole, accumulated, start) < 1e-4  # float32 rounding (summed twice as much: ~0.5)
    for name in ('l_pix', 'l_gk', 'l_kd'):
        assert accumulated.log_dict[name] == pytest.approx(whole.log_dict[name], rel=1e-5)
    adapters = list(accumulated.adapters.parameters())
    assert adapters and all(p.grad is not None and p.grad.any() for p in adapters)


def test_skd_nonfinite_micro_batch_gives_up_the_whole_step(tmp_path):
    opt = skd_model_opt(tmp_path)
    opt['train'].update(accum_iter=2, skip_nonfinite=True)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    model, _ = one_step(opt, batch_of(2))
    before = weights(model)
    data = batch_of(2, seed=3)
    data['lq'][1] = float('nan')  # the second micro-batch
    model.update_learning_rate(2)
    model.feed_data(data)
    model.optimize_parameters(2)
    assert torch.equal(weights(model), before)
    assert all(p.grad is None or not p.grad.any() for p in model.net_g.parameters())


def fed_micro_batches(model, monkeypatch, steps, batch):
    """The lq of every micro-batch the model's own optimize_parameters is given, over ``steps`` iterations."""
    fed = []

    def record(self, current_iter):
        fed.append(self.lq.clone())
        self.log_dict = OrderedDict(l_pix=0.0)

    monkeypatch.setattr(SRModel, 'optimize_parameters', record)
    for it in range(1, steps + 1):
        model.update_learning_rate(it)
        model.feed_data({'lq': batch.clone(), 'gt': batch.clone()})
        model.optimize_parameters(it)
    return fed


def test_progressive_crops_and_mini_batches_per_micro_batch(tmp_path, monkeypatch):
    progressive = {'iters': [1], 'gt_sizes': [8], 'mini_batch_sizes': [1]}
    model = build(make_opt(tmp_path, batch=2, gt_size=32, accum_iter=3, progressive=progressive))
    fed = fed_micro_batches(model, monkeypatch, steps=10, batch=encoded_batch(6, 32))
    assert len(fed) == 30 and all(lq.shape == (1, 3, 8, 8) for lq in fed)
    # each micro-batch keeps its own first sample (0, 2, 4 of the loader batch of 6) ...
    assert [int(lq[0, 0, 0, 0]) // 10000 for lq in fed] == [0, 2, 4] * 10
    # ... at its own random location, as on three GPUs
    corners = [int(lq[0, 0, 0, 0]) % 10000 for lq in fed]
    assert any(len(set(corners[i:i + 3])) > 1 for i in range(0, 30, 3))


def test_mixing_within_each_micro_batch(tmp_path, monkeypatch):
    """Mixup of a micro-batch of one with a permutation of itself leaves it as it is; mixing across the micro-batches
    would blend images 10000 apart."""
    mixing = {'mixup': True, 'mixup_beta': 1.2, 'use_identity': False}
    model = build(make_opt(tmp_path, batch=1, gt_size=16, accum_iter=3, mixing_augs=mixing))
    batch = encoded_batch(3, 16)
    fed = fed_micro_batches(model, monkeypatch, steps=4, batch=batch)
    assert len(fed) == 12
    for i, lq in enumerate(fed):
        assert torch.allclose(lq, batch[i % 3:i % 3 + 1], atol=1e-2)


def test_options_and_split_errors():
    assert accum_iter({}) == 1 and accum_iter({'accum_iter': 8}) == 8
    for bad in (0, -1, 2.0, True, '8'):
        with pytest.raises(OptionError, match=r'train\.accum_iter must be a positive integer'):
            accum_iter({'accum_iter': bad})
    with pytest.raises(ValueError, match=r'a training batch of 5 cannot be cut into 2 equal micro-batches'):
        split(torch.zeros(5, 3, 4, 4), None, 2)
    parts = split(torch.arange(6.).view(6, 1, 1, 1), None, 3)
    assert [p[0].flatten().tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]] and parts[0][1] is None
    assert mean_logs([{'a': 1.0, 'b': 2.0}, {'a': 3.0}]) == {'a': 2.0, 'b': 2.0}


def test_accum_iter_is_checked_when_the_model_is_built(tmp_path):
    with pytest.raises(OptionError, match=r'train\.accum_iter must be a positive integer'):
        build_model(make_opt(tmp_path, accum_iter=0))


def test_training_loop_counts_steps_and_resume_keeps_accumulating(tmp_path):
    """Through `basicsr train`: the loader delivers both micro-batches of a step (4 images: one iteration per epoch),
    each iteration is one AdamW step (its step count equals the iteration), and a resumed run goes on so."""
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=4, size=32)
    opt = ridnet_options('accum', gt, lq, total_iter=2, checkpoint_freq=2)
    opt['datasets']['train'].update(gt_size=16, batch_size_per_gpu=2)
    opt['train']['accum_iter'] = 2
    path = write_options(tmp_path / 'accum.yml', opt)
    first = run_cli(['train', '-opt', path], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert 'Gradient accumulation (train.accum_iter: 2)' in log and 'Require iter number per epoch: 1' in log
    resumed = run_cli(['train', '-opt', path, '--auto_resume', '--force_yml', 'train:total_iter=4'], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resuming training from epoch: 1, iter: 2' in resumed.stdout + resumed.stderr
    states = tmp_path / 'experiments' / 'accum' / 'training_states'
    for it in (2, 4):
        state = safe_torch_load(str(states / f'{it}.state'))
        steps = {int(s['step']) for s in state['optimizers'][0]['state'].values()}
        assert state['iter'] == it and steps == {it}


def test_a_set_smaller_than_one_step_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """4 images make no full step of 2 x accum_iter 4: BasicSR's loop would end at iteration 0 as if it had trained."""
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=4, size=32)
    opt = ridnet_options('too_few', gt, lq)
    opt['datasets']['train'].update(gt_size=16, batch_size_per_gpu=2)
    opt['train']['accum_iter'] = 4
    monkeypatch.chdir(tmp_path)
    assert cli.main(['train', '-opt', write_options(tmp_path / 'too_few.yml', opt)]) == 2
    err = capsys.readouterr().err
    assert ('datasets tiny_train: 4 training sample(s) per GPU (4 image(s) x dataset_enlarge_ratio 1, over 1 GPU(s)) '
            'make no full batch of 8') in err
    assert 'Raise dataset_enlarge_ratio' in err
    assert not list((tmp_path / 'experiments' / 'too_few' / 'models').glob('*'))
