"""Exact resume (issue 22): a run stopped at any iteration and resumed with --auto_resume ends with the weights of the
run that was never interrupted, bit for bit, for SRModel and for SKDModel (adapters, EMA, progressive patches, mixup),
on the CPU in one process without loader workers."""
import os

import pytest
import torch

import skd_basicsr  # noqa: F401  (compat and registries, before basicsr)
from skd_basicsr import cli
from skd_basicsr.platform.checkpoint import safe_torch_load

from helpers import ridnet_options, save_teacher, skd_options, tiny_restormer, write_noisy_pairs, write_options

TOTAL = 8
CHECKPOINT = 3  # states at 3 (mid-epoch: 4 batches per epoch) and 6 (mid-epoch again)


class Killed(Exception):
    """Stands in for SIGKILL: the run ends at once, nothing more is written."""


def options(tmp_path, model_type):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=8, size=32)
    if model_type == 'SRModel':
        opt = ridnet_options('exact', gt, lq, total_iter=TOTAL, checkpoint_freq=CHECKPOINT)
        opt['train']['ema_decay'] = 0.9
    else:
        save_teacher(tmp_path / 'teacher.pth', tiny_restormer(16))
        opt = skd_options('exact', gt, lq, tmp_path / 'teacher.pth', total_iter=TOTAL, checkpoint_freq=CHECKPOINT)
        opt['train'].update(ema_decay=0.9, mixing_augs={'mixup': True, 'mixup_beta': 1.2, 'use_identity': True},
                            progressive={'iters': [5, 3], 'gt_sizes': [16, 8], 'mini_batch_sizes': [2, 1]})
    opt['datasets']['train']['batch_size_per_gpu'] = 2  # 4 batches per epoch of 8 images
    return opt


def train(tmp_path, opt, name, kill_at=None, resume=False, monkeypatch=None):
    """`basicsr train` in this process, in folder ``name``; killed after iteration ``kill_at`` - 1 when given."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    path = write_options(folder / 'opt.yml', dict(opt, name='exact'))
    monkeypatch.chdir(folder)
    if kill_at:
        from basicsr.models.base_model import BaseModel

        update = BaseModel.update_learning_rate

        def update_learning_rate(self, current_iter, *args, **kwargs):  # the loop's first call of an iteration
            if current_iter >= kill_at:
                raise Killed()
            return update(self, current_iter, *args, **kwargs)

        monkeypatch.setattr(BaseModel, 'update_learning_rate', update_learning_rate)
        with pytest.raises(Killed):
            cli.main(['train', '-opt', path])
        monkeypatch.setattr(BaseModel, 'update_learning_rate', update)
    status = cli.main(['train', '-opt', path] + (['--auto_resume'] if resume else []))
    assert status == 0
    return safe_torch_load(str(folder / 'experiments' / 'exact' / 'models' / 'net_g_latest.pth'))


@pytest.mark.parametrize('model_type', ['SRModel', 'SKDModel'])
@pytest.mark.parametrize('kill_at', [5, 7])
def test_a_run_killed_and_resumed_ends_bit_identical_to_the_uninterrupted_one(model_type, kill_at, tmp_path,
                                                                              monkeypatch):
    opt = options(tmp_path, model_type)
    whole = train(tmp_path, opt, 'whole', monkeypatch=monkeypatch)
    resumed = train(tmp_path, opt, 'resumed', kill_at=kill_at, resume=True, monkeypatch=monkeypatch)
    states = sorted(os.listdir(tmp_path / 'resumed' / 'experiments' / 'exact' / 'training_states'))
    assert states == ['3.state', '6.state']  # 3 before a kill at 5 and 6 after it; both before a kill at 7
    for key in ('params', 'params_ema'):
        for name, value in whole[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)


def test_without_the_position_the_resumed_run_is_another_run(tmp_path, monkeypatch):
    """The check above can fail: resumed as BasicSR resumes (epoch restarted, fresh random states) the weights
    differ."""
    from skd_basicsr.platform import exact_resume

    opt = options(tmp_path, 'SRModel')
    whole = train(tmp_path, opt, 'whole', monkeypatch=monkeypatch)
    monkeypatch.setattr(exact_resume, 'resume_position', lambda opt, state: None)
    resumed = train(tmp_path, opt, 'resumed', kill_at=5, resume=True, monkeypatch=monkeypatch)
    assert any(not torch.equal(v, resumed['params'][k]) for k, v in whole['params'].items())


class RandomDraws(torch.utils.data.Dataset):
    """Each item is what the worker's Python and NumPy generators draw for it."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        import random

        import numpy as np

        return torch.tensor([random.random(), float(np.random.rand())])


def epoch_draws(seed, epochs=2):
    from basicsr.data import build_dataloader
    from basicsr.data.data_sampler import EnlargedSampler

    torch.manual_seed(seed)  # as BasicSR's set_random_seed seeds the main process
    dataset = RandomDraws()
    sampler = EnlargedSampler(dataset, 1, 0, 1)
    loader = build_dataloader(dataset, {'phase': 'train', 'num_worker_per_gpu': 2, 'batch_size_per_gpu': 2},
                              num_gpu=0, dist=False, sampler=sampler, seed=seed)
    draws = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        draws.append(torch.cat([batch for batch in loader]))
    return draws


def test_loader_workers_draw_anew_every_epoch_and_alike_for_one_seed():
    first, second = epoch_draws(seed=10)
    assert not torch.equal(first, second)  # BasicSR's seeds gave every epoch the same crops and noise
    again = epoch_draws(seed=10)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert not torch.equal(first, epoch_draws(seed=11)[0])
