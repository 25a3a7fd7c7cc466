"""Optimizers, schedulers, clipping and progressive patches (skd_basicsr/platform/optim.py, lr_scheduler.py,
progressive.py), on a real BasicSR SRModel with tiny BasicSR nets."""
import math
import random

import pytest
import torch

import skd_basicsr  # noqa: F401  (patches, registries)
from basicsr.models import build_model
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR
from basicsr.models.sr_model import SRModel
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.lr_scheduler import CosineAnnealingRestartCyclicLR, cyclic_cosine_lr
from skd_basicsr.platform.optim import grad_clip_norm
from skd_basicsr.platform.progressive import ProgressivePatches

from helpers import basicsr_log

RECIPE_SCHEDULER = {'type': 'CosineAnnealingRestartCyclicLR', 'periods': [92000, 208000], 'restart_weights': [1, 1],
                    'eta_mins': [3e-4, 1e-6]}


def make_opt(tmp_path, scale=1, gt_size=32, batch=4, **train):
    """Options of an SRModel as BasicSR's pipeline hands them to build_model, with Restormer's optimizer."""
    opt = {
        'name': 'training', 'model_type': 'SRModel', 'is_train': True, 'num_gpu': 0, 'dist': False, 'scale': scale,
        'network_g': ({'type': 'RIDNet', 'in_channels': 3, 'mid_channels': 16, 'out_channels': 3, 'num_block': 1}
                      if scale == 1 else
                      {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                       'upscale': scale}),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path / 'models'),
                 'training_states': str(tmp_path / 'training_states'), 'visualization': str(tmp_path / 'vis')},
        'datasets': {'train': {'name': 'train', 'gt_size': gt_size, 'batch_size_per_gpu': batch}},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 3e-4, 'weight_decay': 1e-4, 'betas': [0.9, 0.999]},
                  'scheduler': dict(RECIPE_SCHEDULER), 'total_iter': 300000, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}},
    }
    opt['train'].update(train)
    return opt


def build(opt):
    model = build_model(opt)
    # BasicSR's loop always steps the optimizer before the scheduler; torch warns (an error here) otherwise
    for optimizer in model.optimizers:
        optimizer.step()
    return model


def encoded_batch(batch, size):
    """lq[b, c, y, x] = 10000 b + 100 y + x: a crop tells which samples and where it came from."""
    b = torch.arange(batch).view(-1, 1, 1, 1) * 10000
    y = torch.arange(size).view(1, 1, -1, 1) * 100
    x = torch.arange(size).view(1, 1, 1, -1)
    return (b + y + x).expand(batch, 3, size, size).float()


# --------------------------------------------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------------------------------------------
def test_adamw_from_options_with_its_weight_decay(tmp_path):
    model = build(make_opt(tmp_path))
    group = model.optimizer_g.param_groups[0]
    assert type(model.optimizer_g) is torch.optim.AdamW
    assert group['weight_decay'] == 1e-4 and tuple(group['betas']) == (0.9, 0.999) and group['lr'] == 3e-4


@pytest.mark.parametrize('optim_opt', [{'type': 'SGD', 'lr': 0.1, 'momentum': 0.9}, {'type': 'Adam', 'lr': 1e-3},
                                       {'type': 'RMSprop', 'lr': 1e-3}])
def test_any_torch_optimizer_by_name(tmp_path, optim_opt):
    model = build(make_opt(tmp_path, optim_g=optim_opt))
    assert type(model.optimizer_g).__name__ == optim_opt['type']


def test_unknown_optimizer_lists_the_valid_names(tmp_path):
    with pytest.raises(OptionError, match=r"Unknown optimizer type 'Adamw'\. Did you mean AdamW\? Valid types "
                                          r'\(torch\.optim\): .*Adam, AdamW, .*SGD'):
        build_model(make_opt(tmp_path, optim_g={'type': 'Adamw', 'lr': 1e-4}))
    with pytest.raises(OptionError, match=r'Optimizer AdamW does not accept .*weight_decya'):
        build_model(make_opt(tmp_path, optim_g={'type': 'AdamW', 'lr': 1e-4, 'weight_decya': 1e-4}))


# --------------------------------------------------------------------------------------------------------------
# schedulers
# --------------------------------------------------------------------------------------------------------------
def restormer_lr(iteration):
    """The recipe written out: flat 3e-4 up to 92k, then one cosine from 3e-4 to 1e-6 over 208k iterations."""
    if iteration <= 92000:
        return 3e-4
    return 1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi * (iteration - 92000) / 208000))


@pytest.mark.parametrize('iteration', [0, 1, 45000, 91999, 92000, 92001, 150000, 196000, 250000, 299999, 300000])
def test_cyclic_lr_of_the_restormer_recipe(iteration):
    lr = cyclic_cosine_lr(3e-4, iteration, [92000, 208000], [1, 1], [3e-4, 1e-6])
    assert lr == pytest.approx(restormer_lr(iteration), rel=1e-12, abs=1e-15)


def test_cyclic_lr_shape():
    assert cyclic_cosine_lr(3e-4, 196000, [92000, 208000], [1, 1], [3e-4, 1e-6]) == pytest.approx((3e-4 + 1e-6) / 2)
    assert cyclic_cosine_lr(3e-4, 300000, [92000, 208000], [1, 1], [3e-4, 1e-6]) == pytest.approx(1e-6)
    # past the last cycle the final rate holds; a restart weight scales its cycle's cosine
    assert cyclic_cosine_lr(3e-4, 10**6, [92000, 208000], [1, 1], [3e-4, 1e-6]) == pytest.approx(1e-6)
    assert cyclic_cosine_lr(1.0, 10, [10, 10], [1, 0.5], [0, 0]) == pytest.approx(0)
    assert cyclic_cosine_lr(1.0, 11, [10, 10], [1, 0.5], [0, 0]) == pytest.approx(0.25 * (1 + math.cos(math.pi / 10)))


def test_cyclic_scheduler_through_the_training_loop(tmp_path):
    # the recipe scaled down 1000x: as BasicSR's loop drives it, iteration n runs at the formula's step n - 1
    sched = dict(RECIPE_SCHEDULER, periods=[92, 208])
    model = build(make_opt(tmp_path, scheduler=sched))
    assert type(model.schedulers[0]) is CosineAnnealingRestartCyclicLR
    for current_iter in range(1, 331):
        model.update_learning_rate(current_iter)
        expected = cyclic_cosine_lr(3e-4, current_iter - 1, [92, 208], [1, 1], [3e-4, 1e-6])
        assert model.get_current_learning_rate()[0] == pytest.approx(expected, rel=1e-9)
        if current_iter <= 93:
            assert model.get_current_learning_rate()[0] == pytest.approx(3e-4, rel=1e-12)
    assert model.get_current_learning_rate()[0] == pytest.approx(1e-6)

    resumed = build(make_opt(tmp_path, scheduler=sched))
    resumed.resume_training({'optimizers': [model.optimizer_g.state_dict()],
                             'schedulers': [model.schedulers[0].state_dict()]})
    resumed.update_learning_rate(331)
    model.update_learning_rate(331)
    assert resumed.get_current_learning_rate() == model.get_current_learning_rate()


def test_basicsr_schedulers_still_work_and_options_stay_intact(tmp_path):
    multistep = {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}
    cosine = {'type': 'CosineAnnealingRestartLR', 'periods': [10], 'eta_min': 1e-7}
    assert type(build(make_opt(tmp_path, scheduler=multistep)).schedulers[0]) is MultiStepRestartLR
    assert type(build(make_opt(tmp_path, scheduler=cosine)).schedulers[0]) is CosineAnnealingRestartLR

    opt = make_opt(tmp_path)
    SRModel(opt)  # no deepcopy in between, unlike build_model
    assert opt['train']['scheduler'] == RECIPE_SCHEDULER


def test_scheduler_errors_name_the_valid_types(tmp_path):
    with pytest.raises(OptionError, match=r"Unknown scheduler type 'CosineAnnealingRestartCyclic' in train\.scheduler"
                                          r'\. Did you mean CosineAnnealingRestartCyclicLR\? Valid types: MultiStepLR, '
                                          r'MultiStepRestartLR, CosineAnnealingRestartLR, '
                                          r'CosineAnnealingRestartCyclicLR\.'):
        build_model(make_opt(tmp_path, scheduler={'type': 'CosineAnnealingRestartCyclic', 'periods': [10]}))
    with pytest.raises(OptionError, match=r'train\.scheduler needs a type'):
        build_model(make_opt(tmp_path, scheduler={'periods': [10]}))
    bad = dict(RECIPE_SCHEDULER, eta_mins=[1e-6])
    with pytest.raises(OptionError, match=r'CosineAnnealingRestartCyclicLR\): .*one entry per cycle; got 2, 2 and 1'):
        build_model(make_opt(tmp_path, scheduler=bad))


# --------------------------------------------------------------------------------------------------------------
# gradient clipping
# --------------------------------------------------------------------------------------------------------------
def grad_norm_at_step(model):
    """Run one unmodified SRModel.optimize_parameters; return (norm after backward, norm the optimizer stepped with)."""
    params = list(model.net_g.parameters())
    raw = {}
    stepped = []

    def total_norm(norms):
        return torch.linalg.vector_norm(torch.stack(norms)).item()

    handles = [p.register_post_accumulate_grad_hook(lambda p: raw.__setitem__(p, p.grad.norm())) for p in params]
    handles.append(model.optimizer_g.register_step_pre_hook(
        lambda opt, args, kwargs: stepped.append(total_norm([p.grad.norm() for p in params]))))
    torch.manual_seed(0)
    model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 16, 16)})
    model.optimize_parameters(1)
    for handle in handles:
        handle.remove()
    return total_norm(list(raw.values())), stepped[0]


def test_grad_clip_in_the_optimizer_step(tmp_path):
    model = build(make_opt(tmp_path, use_grad_clip=True, grad_clip_norm=0.01))
    raw, stepped = grad_norm_at_step(model)
    assert raw > 0.01 and stepped <= 0.01 * (1 + 1e-4)


@pytest.mark.parametrize('train', [{}, {'use_grad_clip': False}, {'use_grad_clip': False, 'grad_clip_norm': 0.5}])
def test_no_grad_clip_without_the_option(tmp_path, train):
    raw, stepped = grad_norm_at_step(build(make_opt(tmp_path, **train)))
    assert raw > 0.01 and stepped == raw


def test_grad_clip_options():
    assert grad_clip_norm({'use_grad_clip': True}) == 0.01  # Restormer's value behind the same switch
    assert grad_clip_norm({'use_grad_clip': True, 'grad_clip_norm': 1}) == 1.0
    assert grad_clip_norm({}) is None
    with pytest.raises(OptionError, match=r'train\.grad_clip_norm is 0\.1 but train\.use_grad_clip is not set'):
        grad_clip_norm({'grad_clip_norm': 0.1})
    with pytest.raises(OptionError, match=r'train\.grad_clip_norm must be a positive number, got -1'):
        grad_clip_norm({'use_grad_clip': True, 'grad_clip_norm': -1})
    with pytest.raises(OptionError, match=r"train\.use_grad_clip must be true or false, got 'yes'"):
        grad_clip_norm({'use_grad_clip': 'yes'})


def test_grad_clip_options_checked_when_the_model_is_built(tmp_path):
    with pytest.raises(OptionError, match=r'train\.grad_clip_norm is 0\.1'):
        build_model(make_opt(tmp_path, grad_clip_norm=0.1))


# --------------------------------------------------------------------------------------------------------------
# progressive patch training
# --------------------------------------------------------------------------------------------------------------
PROGRESSIVE = {'iters': [2, 3, 1], 'gt_sizes': [16, 24, 32], 'mini_batch_sizes': [4, 2, 1]}
# (iteration, patch, mini-batch): stage ends at 2, 5, 6; later iterations stay in the last stage
EXPECTED_STAGES = [(1, 16, 4), (2, 16, 4), (3, 24, 2), (5, 24, 2), (6, 32, 1), (7, 32, 1), (50, 32, 1)]


@pytest.fixture
def progress_log():
    with basicsr_log() as records:
        yield records


def test_progressive_crops_at_the_stage_boundaries(tmp_path, progress_log):
    model = build(make_opt(tmp_path, progressive=PROGRESSIVE))
    lq = encoded_batch(4, 32)
    for current_iter, size, mini_batch in EXPECTED_STAGES:
        model.update_learning_rate(current_iter)
        model.feed_data({'lq': lq, 'gt': lq.clone()})
        assert model.lq.shape == (mini_batch, 3, size, size) and torch.equal(model.lq, model.gt)
        top, left = divmod(int(model.lq[0, 0, 0, 0]), 100)
        assert torch.equal(model.lq, lq[:mini_batch, :, top:top + size, left:left + size])
        model.optimize_parameters(current_iter)  # the unmodified SRModel step trains on the crop
        assert model.output.shape == model.lq.shape
    changes = [m for m in progress_log if m.startswith('Progressive training')]
    assert changes == ['Progressive training, iter 1: stage 1/3, patch size 16, mini-batch 4.',
                       'Progressive training, iter 3: stage 2/3, patch size 24, mini-batch 2.',
                       'Progressive training, iter 6: stage 3/3, patch size 32, mini-batch 1.']


def test_progressive_crop_location_is_random_and_shared():
    schedule = ProgressivePatches([1], [8], [2])
    lq = encoded_batch(2, 32)
    corners = set()
    for _ in range(20):
        crop, gt = schedule.crop(lq, lq.clone(), 1)
        assert torch.equal(crop, gt)
        corners.add(int(crop[0, 0, 0, 0]))
        assert torch.equal(crop[1] - crop[0], torch.full_like(crop[0], 10000))  # one location for the batch
    assert len(corners) > 1


def test_progressive_super_resolution_crops_gt_at_scale(tmp_path):
    progressive = {'iters': [1, 1], 'gt_sizes': [16, 32], 'mini_batch_sizes': [2, 1]}
    model = build(make_opt(tmp_path, scale=2, gt_size=32, batch=2, progressive=progressive))
    lq = encoded_batch(2, 16)
    gt = lq.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    for current_iter, lq_size, mini_batch in [(1, 8, 2), (2, 16, 1)]:
        model.update_learning_rate(current_iter)
        model.feed_data({'lq': lq, 'gt': gt})
        assert model.lq.shape == (mini_batch, 3, lq_size, lq_size)
        assert torch.equal(model.gt, model.lq.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1))


class ValLoader(list):
    """What nondist_validation needs of a dataloader: iteration, and dataset.opt['name']."""

    class dataset:  # noqa: N801
        opt = {'name': 'val'}


def test_progressive_leaves_validation_untouched(tmp_path):
    model = build(make_opt(tmp_path, progressive=PROGRESSIVE))
    lq = encoded_batch(4, 32) / 1e6
    model.update_learning_rate(1)
    model.feed_data({'lq': lq, 'gt': lq})
    assert model.lq.shape == (4, 3, 16, 16)
    model.optimize_parameters(1)

    # a validation batch of exactly the training size and batch: not cropped, in validation or in a later feed_data
    seen = []
    handle = model.net_g.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    model.nondist_validation(ValLoader([{'lq': lq, 'gt': lq, 'lq_path': ['a.png']}]), 1, None, False)
    handle.remove()
    assert seen == [(4, 3, 32, 32)] and 'psnr' in model.metric_results
    model.feed_data({'lq': lq, 'gt': lq})
    assert model.lq.shape == (4, 3, 32, 32)


def test_models_without_progressive_options_are_not_wrapped(tmp_path):
    model = build(make_opt(tmp_path))
    assert 'feed_data' not in vars(model) and 'update_learning_rate' not in vars(model)
    model.update_learning_rate(1)
    model.feed_data({'lq': torch.rand(4, 3, 32, 32), 'gt': torch.rand(4, 3, 32, 32)})
    assert model.lq.shape == (4, 3, 32, 32)

    test_opt = make_opt(tmp_path, progressive=PROGRESSIVE)
    test_opt['is_train'] = False
    assert 'feed_data' not in vars(build_model(test_opt))


@pytest.mark.parametrize('progressive, dataset, message', [
    ({'iters': [1, 2], 'gt_sizes': [16], 'mini_batch_sizes': [4, 2]}, {},
     r'train\.progressive: iters, gt_sizes and mini_batch_sizes need one entry per stage; got 2, 1 and 2\.'),
    ({'iters': [1, 2], 'gt_sizes': [16, 48], 'mini_batch_sizes': [4, 2]}, {},
     r'train\.progressive\.gt_sizes \[48\] exceed datasets\.train\.gt_size \(32\)'),
    ({'iters': [1], 'gt_sizes': [16], 'mini_batch_sizes': [8]}, {},
     r'train\.progressive\.mini_batch_sizes \[8\] exceed datasets\.train\.batch_size_per_gpu \(4\)'),
    ({'iters': [1], 'gt_sizes': [16]}, {},
     r'train\.progressive takes exactly .*unknown: none; missing: mini_batch_sizes'),
    (dict(PROGRESSIVE, gt_size=32), {}, r'unknown: gt_size; missing: none'),
    (dict(PROGRESSIVE, iters=[2, 0, 1]), {},
     r'train\.progressive\.iters must be a non-empty list of positive integers, got \[2, 0, 1\]'),
    (dict(PROGRESSIVE, gt_sizes=16), {}, r'train\.progressive\.gt_sizes must be a non-empty list'),
    (None, dict(PROGRESSIVE), r'datasets\.train has iters, gt_sizes, mini_batch_sizes .*move .* to train\.progressive'),
    (PROGRESSIVE, {'gt_sizes': [16]}, r'datasets\.train has gt_sizes besides train\.progressive'),
])
def test_progressive_option_errors(tmp_path, progressive, dataset, message):
    opt = make_opt(tmp_path, progressive=progressive)
    opt['datasets']['train'].update(dataset)
    with pytest.raises(OptionError, match=message):
        build_model(opt)


def test_progressive_sizes_must_be_multiples_of_the_scale(tmp_path):
    opt = make_opt(tmp_path, scale=2, progressive={'iters': [1, 1], 'gt_sizes': [15, 32], 'mini_batch_sizes': [1, 1]})
    with pytest.raises(OptionError, match=r'train\.progressive\.gt_sizes \[15\] are not multiples of scale \(2\)'):
        build_model(opt)


# --------------------------------------------------------------------------------------------------------------
# mixing augmentation
MIXING = {'mixup': True, 'mixup_beta': 1.2, 'use_identity': True}


def test_mixing_mixes_lq_and_gt_alike_on_training_batches_only(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    progressive = {'iters': [100], 'gt_sizes': [16], 'mini_batch_sizes': [4]}
    model = build(make_opt(tmp_path, progressive=progressive, mixing_augs=MIXING))
    lq = encoded_batch(4, 32)
    gt = lq * 2
    mixed = 0
    for current_iter in range(1, 21):
        model.update_learning_rate(current_iter)
        model.feed_data({'lq': lq, 'gt': gt})
        assert model.lq.shape == (4, 3, 16, 16)  # cropped, then mixed
        assert torch.allclose(model.gt, model.lq * 2)  # one weight and one permutation for lq and gt
        mixed += not torch.equal(model.lq, model.lq.round())  # a weight in (0, 1) leaves the integer codes
    assert 3 < mixed < 17  # the identity is one of two equally likely choices
    model.feed_data({'lq': lq, 'gt': gt})  # validation: untouched
    assert torch.equal(model.lq, lq) and torch.equal(model.gt, gt)


def test_mixing_weight_is_beta_distributed():
    from skd_basicsr.platform.mixing import MixingAugment
    torch.manual_seed(0)
    mix = MixingAugment(mixup_beta=1.2, use_identity=False)  # every batch mixed
    lq = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    weights = []
    for _ in range(400):
        out, _ = mix(lq, None)
        if out[0].item() != 0:  # permuted [1, 0]: sample 1 became lam * 1 + (1 - lam) * 0
            weights.append(out[1].item())
    weights = torch.tensor(weights)
    assert len(weights) > 150 and 0 < weights.min() and weights.max() < 1
    assert abs(weights.mean().item() - 0.5) < 0.05
    assert abs(weights.var().item() - 1.2 * 1.2 / (2.4 ** 2 * 3.4)) < 0.02  # the variance of Beta(1.2, 1.2)


@pytest.mark.parametrize('mixing, message', [
    ({'mixup': True, 'mixup_alpha': 1.2}, r"train.mixing_augs: unknown option\(s\) \['mixup_alpha'\]"),
    ({'mixup': 'yes'}, r"train.mixing_augs.mixup must be true or false, got 'yes'"),
    ({'mixup': True, 'mixup_beta': 0}, r'mixup_beta must be a positive number, got 0'),
])
def test_mixing_option_errors(tmp_path, mixing, message):
    with pytest.raises(OptionError, match=message):
        build_model(make_opt(tmp_path, mixing_augs=mixing))
