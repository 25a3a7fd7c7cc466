"""The distillation study's candidate options beyond the paper (issue 10), which live in benchmarks/study: L_CL's
negatives and bound (StudySKDContrastiveLoss), the restored negatives (StudySKDModel);
and the product's refusal of them."""
import os

import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from skd_basicsr.distill import SKDContrastiveLoss
from skd_basicsr.platform.errors import OptionError

from benchmarks.study.contrastive_loss import StudySKDContrastiveLoss

from helpers import PixelSpace, l1, logged_terms, noisy_batch, skd_model_opt


def images(seed=0, count=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 8, 8, generator=g) for _ in range(count)]


# ---------------------------------------------------------------------------------------------------------------
# L_CL: negatives and bound
# ---------------------------------------------------------------------------------------------------------------
def test_several_negatives_take_the_mean_of_their_distances():
    anchor, positive, neg1, neg2 = images()
    loss = StudySKDContrastiveLoss(feature_space=PixelSpace(), negatives=['input', 'batch'], eps=1e-7)
    expected = (l1(anchor, positive) / ((l1(anchor, neg1) + l1(anchor, neg2)) / 2 + 1e-7)).mean()
    torch.testing.assert_close(loss(anchor, positive, [neg1, neg2]), expected)
    # one negative given as a tensor is the paper's form
    single = SKDContrastiveLoss(feature_space=PixelSpace())
    expected = (l1(anchor, positive) / (l1(anchor, neg1) + 1e-7)).mean()
    torch.testing.assert_close(single(anchor, positive, neg1), expected)


def test_bound_caps_each_negative_distance_at_the_positives_and_stops_the_push():
    positive = torch.full((1, 3, 4, 4), 0.5)
    negative = torch.full((1, 3, 4, 4), 0.7)  # d(positive, negative) = 0.2
    far = torch.full((1, 3, 4, 4), 0.1, requires_grad=True)  # d(anchor, positive) = 0.4, d(anchor, negative) = 0.6
    near = torch.full((1, 3, 4, 4), 0.6, requires_grad=True)  # d(anchor, negative) = 0.1 < the cap
    bounded = StudySKDContrastiveLoss(feature_space=PixelSpace(), bound='positive', eps=1e-9)
    ratio = SKDContrastiveLoss(feature_space=PixelSpace(), eps=1e-9)
    torch.testing.assert_close(bounded(far, positive, negative), torch.tensor(0.4 / 0.2))
    torch.testing.assert_close(ratio(far, positive, negative), torch.tensor(0.4 / 0.6))
    # beyond the cap only the pull towards the positive remains: the gradient is d_pos's alone
    bounded(far, positive, negative).backward()
    pull_only = l1(far, positive).mean() / (0.2 + 1e-9)
    grad_far = far.grad.clone()
    far.grad = None
    pull_only.backward()
    torch.testing.assert_close(grad_far, far.grad)
    # inside the cap the bound changes nothing
    torch.testing.assert_close(bounded(near, positive, negative), ratio(near, positive, negative))


@pytest.mark.parametrize('kwargs, message', [
    ({'negatives': []}, r"negatives \[\] is not allowed: use a non-empty list of distinct names among"),
    ({'negatives': ['input', 'ema']}, r"negatives \['input', 'ema'\] is not allowed"),
    ({'negatives': ['input', 'input']}, r"negatives \['input', 'input'\] is not allowed"),
    ({'bound': 'margin'}, r"bound 'margin' is not one of \('none', 'positive'\)"),
    ({'lag_decay': 1.0}, r'lag_decay must be a number in \[0, 1\), got 1.0'),
    ({'lag_warmup_iter': -1}, r'lag_warmup_iter must be an integer >= 0, got -1'),
])
def test_contrast_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudySKDContrastiveLoss(feature_space=PixelSpace(), **kwargs)


def test_negative_feats_must_match_the_negatives():
    anchor, positive, neg1, neg2 = images()
    loss = StudySKDContrastiveLoss(feature_space=PixelSpace(), negatives=['input', 'batch'])
    with pytest.raises(ValueError, match=r'2 negative\(s\) but 3 entries of negative_feats'):
        loss(anchor, positive, [neg1, neg2], negative_feats=[None, None, None])


def study_opt(tmp_path, **contrast):
    """The tiny SKD options run by the study's model and contrastive loss, with ``contrast`` options."""
    opt = skd_model_opt(tmp_path)
    opt['model_type'] = 'StudySKDModel'
    opt['train']['contrast_opt'].update(contrast, type='StudySKDContrastiveLoss')
    return opt


def contrast_model(tmp_path, **contrast):
    return build_model(study_opt(tmp_path, **contrast))


def test_batch_negative_is_the_teachers_output_for_another_image(tmp_path):
    model = contrast_model(tmp_path, negatives=['batch'])
    model.feed_data(noisy_batch())
    model.optimize_parameters(1)
    negatives, feats = model.contrast_negatives({})
    torch.testing.assert_close(negatives[0], model.output_t.roll(1, dims=0))
    assert feats == [None]
    assert model.net_lag is None


def test_lagged_negative_follows_the_student_with_its_decay(tmp_path):
    model = contrast_model(tmp_path, negatives=['lagged'], lag_decay=0.9, lag_warmup_iter=0)
    lag = {k: v.clone() for k, v in model.net_lag.state_dict().items()}
    student = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    assert all(torch.equal(lag[k], student[k]) for k in lag)  # starts as the student
    assert not any(p.requires_grad for p in model.net_lag.parameters()) and not model.net_lag.training
    model.feed_data(noisy_batch())
    model.optimize_parameters(1)
    after = model.net_g.state_dict()
    moved = 0
    for name, value in model.net_lag.state_dict().items():
        torch.testing.assert_close(value, 0.9 * lag[name] + 0.1 * after[name])
        moved += not torch.equal(value, lag[name])
    assert moved > 0
    negatives, feats = model.contrast_negatives({})
    with torch.no_grad():
        torch.testing.assert_close(negatives[0], model.net_lag(model.lq))
    assert feats == [None]
    model.save(0, 1)  # the lagged copy is not exported: only the student's weights, and the training state holds it
    assert os.listdir(model.opt['path']['models']) == ['net_g_1.pth']
    saved = torch.load(os.path.join(model.opt['path']['models'], 'net_g_1.pth'), weights_only=True)['params']
    assert saved.keys() == model.net_g.state_dict().keys()
    state = torch.load(os.path.join(model.opt['path']['training_states'], '1.state'), weights_only=True)
    resumed = contrast_model(tmp_path / 'resumed', negatives=['lagged'], lag_decay=0.9, lag_warmup_iter=0)
    resumed.resume_training(state)  # a resumed run goes on with the lagging student, not a fresh copy
    for name, value in model.net_lag.state_dict().items():
        assert torch.equal(resumed.net_lag.state_dict()[name], value)
    assert any(not torch.equal(resumed.net_lag.state_dict()[k], v) for k, v in resumed.net_g.state_dict().items())


def test_the_lagged_negative_waits_for_its_warmup_instead_of_a_ratio_over_zero(tmp_path):
    model = contrast_model(tmp_path, negatives=['lagged'], lag_decay=0.99, lag_warmup_iter=2)
    logged = []
    for it in (1, 2, 3):
        model.feed_data(noisy_batch(seed=it))
        model.optimize_parameters(it)
        logged.append(float(model.log_dict['l_cl']))
    # before the warm-up ends the lagging average is the student itself: d(anchor, negative) is about 0 and the
    # ratio was about d_pos / 1e-7; now L_CL waits, then counts at a finite, ordinary size
    assert logged[:2] == [0.0, 0.0]
    assert 0 < logged[2] < 1e3


def test_the_batch_negative_is_refused_when_a_progressive_stage_has_a_mini_batch_of_one(tmp_path):
    opt = study_opt(tmp_path, negatives=['batch'])
    opt['train']['progressive'] = {'iters': [2, 2], 'gt_sizes': [16, 8], 'mini_batch_sizes': [2, 1]}
    with pytest.raises(OptionError, match=r'negatives: batch takes another image of the batch, but '
                                          r'train.progressive.mini_batch_sizes gives stage 2 a mini-batch of 1'):
        build_model(opt)


@pytest.mark.parametrize('negatives', [['lagged', 'batch'], ['batch']])
def test_batch_negative_needs_two_images_per_batch(tmp_path, negatives):
    opt = study_opt(tmp_path, negatives=negatives)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    with pytest.raises(OptionError, match=r'negatives: batch takes another image of the batch, but '
                                          r'datasets.train.batch_size_per_gpu is 1'):
        build_model(opt)


# ---------------------------------------------------------------------------------------------------------------
# the product refuses the study's options, saying where they live
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('option, value', [('negatives', ['batch']), ('bound', 'positive'), ('lag_decay', 0.9)])
def test_the_product_contrastive_loss_refuses_the_studys_options(tmp_path, option, value):
    opt = skd_model_opt(tmp_path)
    opt['train']['contrast_opt'][option] = value
    with pytest.raises(OptionError, match=rf"train.contrast_opt: unknown option\(s\) '{option}'.*{option} is an "
                                          r'option of the distillation study \(benchmarks/study, '
                                          r'StudySKDContrastiveLoss\)'):
        build_model(opt)


def test_the_study_model_with_the_products_options_is_the_product(tmp_path):
    """StudySKDModel changes nothing where the study's options are not set: the same loss terms on one batch."""
    product = build_model(skd_model_opt(tmp_path / 'product'))
    opt = skd_model_opt(tmp_path / 'study')
    opt['model_type'] = 'StudySKDModel'
    study = build_model(opt)
    study.net_g.load_state_dict(product.net_g.state_dict())
    study.adapters.load_state_dict(product.adapters.state_dict())
    assert logged_terms(study, 1) == pytest.approx(logged_terms(product, 1), rel=1e-6)
    assert study.net_lag is None
