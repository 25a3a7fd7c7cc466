"""MCA, the Gaussian-kernel distance and SKDFeatureLoss, checked against a naive reference written out below.

The reference builds every affinity explicitly (the N x N one included) and applies the softmax over the index
each reading names. Golden values in tests/data/skd_loss_golden.json were computed with it in float64; run
``python tests/test_skd_loss.py`` to write them again (only when a number is meant to change).
tests/test_paper_formulas.py checks them against an oracle written from the paper's equations alone; the study's
options beyond the paper (benchmarks/study/feature_loss.py) are checked in tests/test_study_feature_loss.py.
"""
import json
import math
import os
from collections import OrderedDict
from os import path as osp

import pytest
import torch

import skd_basicsr  # noqa: F401  (applies compat, registers the loss)
from skd_basicsr.distill import SKDFeatureLoss, gaussian_kernel_distance, mca_channel, mca_spatial

GOLDEN = osp.join(osp.dirname(osp.abspath(__file__)), 'data', 'skd_loss_golden.json')


# --------------------------------------------------------------------------------------------------------------
# naive reference
# --------------------------------------------------------------------------------------------------------------
def naive_temperature(temperature, contracted_dim):
    return math.sqrt(contracted_dim) if temperature == 'auto' else temperature


def naive_mca_channel(s, t, temperature='auto'):
    b, c, h, w = s.shape
    s_mat, t_mat = s.reshape(b, c, h * w), t.reshape(b, c, h * w)
    logits = t_mat @ s_mat.transpose(1, 2) / naive_temperature(temperature, h * w)  # (B, C_teacher, C_student)
    return (torch.softmax(logits, dim=2) @ s_mat).reshape(b, c, h, w)


def naive_mca_spatial(s, t, temperature='auto', softmax='contracted'):
    b, c, h, w = s.shape
    s_mat, t_mat = s.reshape(b, c, h * w), t.reshape(b, c, h * w)
    logits = t_mat.transpose(1, 2) @ s_mat / naive_temperature(temperature, c)  # (B, N, N), [p, q] = <T_p, S_q>
    # S @ P sums over p (dim 1): 'contracted' normalises over p, 'rows' over q
    probs = torch.softmax(logits, dim=1 if softmax == 'contracted' else 2)
    return (s_mat @ probs).reshape(b, c, h, w)


def naive_gk(x, y, sigma=1.0):
    squared = (x - y)**2
    mean_sq = squared.reshape(x.shape[0], -1).sum(dim=1) / squared[0].numel()
    return 1 - torch.exp(-mean_sq / (2 * sigma**2))


def naive_skd_loss(preds,
                   targets,
                   loss_weight=1.0,
                   reduction='mean',
                   mca_weight=1.0,
                   sigma=1.0,
                   temperature='auto',
                   branches=('direct', 'channel', 'spatial'),
                   spatial_softmax='contracted',
                   level_weights=None,
                   weight=None,
                   naive_channel=naive_mca_channel):
    """L_GK from the naive branches; ``naive_channel(s, t, temperature)`` is the channel branch's reference."""
    parts = OrderedDict()
    for branch in ('direct', 'channel', 'spatial'):
        if branch not in branches:
            continue
        total = 0.0
        for i, (s, t) in enumerate(zip(preds, targets)):
            if branch == 'direct':
                projected = s
            elif branch == 'channel':
                projected = naive_channel(s, t, temperature)
            else:
                projected = naive_mca_spatial(s, t, temperature, spatial_softmax)
            per_sample = naive_gk(projected, t, sigma)
            if weight is None:
                reduced = per_sample.mean() if reduction == 'mean' else per_sample.sum()
            else:
                reduced = (per_sample * weight).sum() / (weight.sum() if reduction == 'mean' else 1)
            level_weight = 1.0 if level_weights is None else level_weights[i]
            total = total + level_weight * reduced
        parts[f'l_gk_{branch}'] = loss_weight * (1.0 if branch == 'direct' else mca_weight) * total
    return sum(parts.values()), parts


# --------------------------------------------------------------------------------------------------------------
# golden values
# --------------------------------------------------------------------------------------------------------------
GOLDEN_SHAPES = [(2, 4, 4, 4), (2, 8, 2, 3)]
GOLDEN_CASES = OrderedDict([
    ('defaults', {}),
    ('paper_temperature', {
        'temperature': 1e-6,
        'loss_weight': 0.1,
        'mca_weight': 0.5,
        'sigma': 2.0
    }),
    ('rows_two_branches_level_weights_sum', {
        'spatial_softmax': 'rows',
        'chunk_size': 5,
        'branches': ['direct', 'spatial'],
        'level_weights': [1.0, 0.5],
        'reduction': 'sum',
        'temperature': 0.7
    }),
])


def naive_golden_values(students, teachers):
    values = {}
    for name, opt in GOLDEN_CASES.items():
        naive_opt = {k: v for k, v in opt.items() if k != 'chunk_size'}
        loss, parts = naive_skd_loss([s.double() for s in students], [t.double() for t in teachers], **naive_opt)
        values[name] = {'options': opt, 'loss': loss.item(), 'parts': {k: v.item() for k, v in parts.items()}}
    return values


def make_golden():
    """Fixed-seed float32 features, stored with the values so that the test does not depend on the RNG."""
    gen = torch.Generator().manual_seed(2025)
    students = [torch.randn(shape, generator=gen) for shape in GOLDEN_SHAPES]
    teachers = [0.6 * s + 0.8 * torch.randn(s.shape, generator=gen) for s in students]
    return {
        'students': [s.tolist() for s in students],
        'teachers': [t.tolist() for t in teachers],
        'cases': naive_golden_values(students, teachers)
    }


def load_golden():
    with open(GOLDEN) as f:
        data = json.load(f)
    students = [torch.tensor(s, dtype=torch.float32) for s in data['students']]
    teachers = [torch.tensor(t, dtype=torch.float32) for t in data['teachers']]
    return data, students, teachers


@pytest.mark.parametrize('name', list(GOLDEN_CASES))
def test_loss_matches_golden_values(name):
    data, students, teachers = load_golden()
    case = data['cases'][name]
    loss, parts = SKDFeatureLoss(**case['options'])(students, teachers)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - case['loss']) < 1e-5
    assert list(parts) == list(case['parts'])
    for key, value in case['parts'].items():
        assert abs(parts[key].item() - value) < 1e-5, key


# --------------------------------------------------------------------------------------------------------------
# agreement with the naive reference: values and gradients
# --------------------------------------------------------------------------------------------------------------
def features(shape, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=gen, dtype=dtype)
    t = 0.5 * s + torch.randn(shape, generator=gen, dtype=dtype)
    return s, t


def assert_same_values_and_grads(fn, ref, s, t, rtol=1e-7, atol=1e-9):
    """fn and ref agree in value and in the gradient w.r.t. s and t of a random projection of the output."""
    outs, grads = [], []
    for impl in (fn, ref):
        s_, t_ = s.clone().requires_grad_(), t.clone().requires_grad_()
        out = impl(s_, t_)
        probe = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
        (out * probe).sum().backward()
        outs.append(out.detach())
        grads.append((s_.grad, t_.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=rtol, atol=atol)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=rtol, atol=atol)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=rtol, atol=atol)


@pytest.mark.parametrize('temperature', ['auto', 0.3, 5.0])
@pytest.mark.parametrize('shape', [(2, 4, 5, 3), (1, 16, 4, 4)])
def test_mca_channel_matches_naive(shape, temperature):
    s, t = features(shape, seed=1)
    assert_same_values_and_grads(lambda a, b: mca_channel(a, b, temperature),
                                 lambda a, b: naive_mca_channel(a, b, temperature), s, t)


@pytest.mark.parametrize('temperature', ['auto', 0.3, 5.0])
@pytest.mark.parametrize('shape', [(2, 4, 5, 3), (1, 16, 8, 8)])
def test_mca_spatial_contracted_matches_naive(shape, temperature):
    s, t = features(shape, seed=2)
    assert_same_values_and_grads(lambda a, b: mca_spatial(a, b, temperature),
                                 lambda a, b: naive_mca_spatial(a, b, temperature, 'contracted'), s, t)


@pytest.mark.parametrize('chunk_size', [1, 7, 64, 1000])
def test_mca_spatial_rows_matches_naive_with_and_without_chunking(chunk_size):
    s, t = features((2, 6, 8, 8), seed=3)  # N = 64: chunk 7 splits unevenly, 64 and 1000 are one chunk
    assert_same_values_and_grads(lambda a, b: mca_spatial(a, b, 0.8, 'rows', chunk_size),
                                 lambda a, b: naive_mca_spatial(a, b, 0.8, 'rows'), s, t)


def test_mca_spatial_rows_passes_gradcheck():
    s, t = features((2, 3, 3, 4), seed=4)
    assert torch.autograd.gradcheck(lambda a, b: mca_spatial(a, b, 0.5, 'rows', chunk_size=5),
                                    (s.requires_grad_(), t.requires_grad_()))


def test_spatial_readings_differ_and_contracted_is_convex():
    s, t = features((1, 4, 4, 4), seed=5)
    contracted, rows = mca_spatial(s, t), mca_spatial(s, t, softmax='rows')
    assert not torch.allclose(contracted, rows)
    # a convex combination of student tokens stays inside their per-channel range
    tokens, out = s.flatten(2), contracted.flatten(2)
    assert (out >= tokens.min(-1, keepdim=True).values - 1e-12).all()
    assert (out <= tokens.max(-1, keepdim=True).values + 1e-12).all()


def test_mca_float32_and_channels_last_inputs():
    s, t = features((2, 8, 6, 6), seed=6, dtype=torch.float32)
    s_cl, t_cl = s.to(memory_format=torch.channels_last), t.to(memory_format=torch.channels_last)
    for softmax in ('contracted', 'rows'):
        torch.testing.assert_close(mca_spatial(s_cl, t_cl, softmax=softmax, chunk_size=10),
                                   naive_mca_spatial(s, t, softmax=softmax),
                                   rtol=1e-5,
                                   atol=1e-6)
    torch.testing.assert_close(mca_channel(s_cl, t_cl), naive_mca_channel(s, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('sigma', [1.0, 0.3])
def test_gaussian_kernel_distance_matches_naive_and_keeps_a_gradient(sigma):
    x, y = features((3, 4, 5, 5), seed=7)
    assert gaussian_kernel_distance(x, y, sigma).shape == (3, )
    assert_same_values_and_grads(lambda a, b: gaussian_kernel_distance(a, b, sigma), lambda a, b: naive_gk(a, b, sigma),
                                 x, y)
    # a mean, not a sum: large features of unit-scale difference stay far from saturation
    big_x, big_y = features((2, 64, 32, 32), seed=8)
    assert gaussian_kernel_distance(big_x, big_y).max() < 0.9


LOSS_OPTIONS = [
    {},
    {
        'loss_weight': 0.1,
        'mca_weight': 0.5,
        'sigma': 2.0,
        'temperature': 0.25
    },
    {
        'branches': ['spatial', 'channel'],
        'spatial_softmax': 'rows',
        'chunk_size': 9,
        'reduction': 'sum'
    },
    {
        'branches': ['direct'],
        'level_weights': [0.0, 2.0]
    },
    {
        'level_weights': [1.0, 0.3],
        'temperature': 1e-6
    },
]


def assert_loss_matches_naive(loss_fn, **naive_opt):
    """``loss_fn`` (an L_GK module) against :func:`naive_skd_loss` with ``naive_opt``, on two levels: the value, the
    parts and the students' gradients."""
    shapes = [(2, 4, 6, 6), (2, 12, 3, 3)]
    pairs = [features(shape, seed=10 + i) for i, shape in enumerate(shapes)]
    students = [s.clone().requires_grad_() for s, _ in pairs]
    loss, parts = loss_fn([s for s in students], [t for _, t in pairs])
    loss.backward()
    ref_students = [s.clone().requires_grad_() for s, _ in pairs]
    ref_loss, ref_parts = naive_skd_loss(ref_students, [t for _, t in pairs], **naive_opt)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-9, atol=1e-12)
    assert list(parts) == list(ref_parts)
    for key in parts:
        torch.testing.assert_close(parts[key], ref_parts[key].detach(), rtol=1e-9, atol=1e-12)
    for mine, ref in zip(students, ref_students):
        torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize('opt', LOSS_OPTIONS)
def test_loss_matches_naive_values_parts_and_student_gradients(opt):
    assert_loss_matches_naive(SKDFeatureLoss(**opt), **{k: v for k, v in opt.items() if k != 'chunk_size'})


def test_per_sample_weight_is_a_weighted_mean_or_sum():
    s, t = features((3, 4, 4, 4), seed=20)
    weight = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    for reduction in ('mean', 'sum'):
        loss, _ = SKDFeatureLoss(reduction=reduction)(s, t, weight)
        ref, _ = naive_skd_loss([s], [t], reduction=reduction, weight=weight)
        torch.testing.assert_close(loss, ref)


# --------------------------------------------------------------------------------------------------------------
# gradient flow, teacher hygiene, parts
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('spatial_softmax', ['contracted', 'rows'])
def test_gradient_reaches_the_student_and_never_the_teacher(spatial_softmax):
    s, t = features((2, 4, 4, 4), seed=21, dtype=torch.float32)
    student, teacher = s.requires_grad_(), t.requires_grad_()  # a careless caller: the teacher requires grad
    loss, _ = SKDFeatureLoss(spatial_softmax=spatial_softmax)([student], [teacher])
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize('spatial_softmax', ['contracted', 'rows'])
def test_teacher_features_from_inference_mode_are_accepted(spatial_softmax):
    s, t = features((2, 4, 4, 4), seed=22, dtype=torch.float32)
    with torch.inference_mode():
        teacher = t * 1.0
    assert teacher.is_inference()
    student = s.clone().requires_grad_()
    loss, _ = SKDFeatureLoss(spatial_softmax=spatial_softmax)([student], [teacher])
    loss.backward()
    ref, _ = naive_skd_loss([s], [t], spatial_softmax=spatial_softmax)
    torch.testing.assert_close(loss.detach(), ref)
    assert student.grad.abs().sum() > 0


def test_parts_are_detached_and_sum_to_the_loss():
    s, t = features((2, 4, 4, 4), seed=23, dtype=torch.float32)
    loss, parts = SKDFeatureLoss(loss_weight=0.1, mca_weight=0.7)([s.requires_grad_()], [t])
    assert list(parts) == ['l_gk_direct', 'l_gk_channel', 'l_gk_spatial']
    assert all(not p.requires_grad and p.dim() == 0 for p in parts.values())
    assert loss.requires_grad and loss.dim() == 0
    torch.testing.assert_close(sum(parts.values()), loss.detach())
    _, parts = SKDFeatureLoss(branches=['spatial', 'direct'])([s], [t])
    assert list(parts) == ['l_gk_direct', 'l_gk_spatial']


def test_single_tensor_equals_one_level_list():
    s, t = features((2, 4, 4, 4), seed=24)
    loss_fn = SKDFeatureLoss()
    torch.testing.assert_close(loss_fn(s, t)[0], loss_fn([s], [t])[0])


def test_built_through_basicsr_build_loss():
    from basicsr.losses import build_loss
    opt = {
        'type': 'SKDFeatureLoss',
        'loss_weight': 0.1,
        'mca_weight': 0.5,
        'sigma': 2.0,
        'temperature': 'auto',
        'branches': ['direct', 'channel', 'spatial'],
        'spatial_softmax': 'rows',
        'chunk_size': 32
    }
    loss_fn = build_loss(opt)
    assert isinstance(loss_fn, SKDFeatureLoss)
    assert (loss_fn.loss_weight, loss_fn.mca_weight, loss_fn.sigma, loss_fn.spatial_softmax) == (0.1, 0.5, 2.0, 'rows')
    s, t = features((1, 4, 4, 4), seed=25)
    ref, _ = naive_skd_loss([s], [t], loss_weight=0.1, mca_weight=0.5, sigma=2.0, spatial_softmax='rows')
    torch.testing.assert_close(loss_fn([s], [t])[0], ref)


def test_the_study_option_is_not_the_products():
    """channel_affinity lives in benchmarks/study (StudySKDFeatureLoss)."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'channel_affinity'"):
        SKDFeatureLoss(channel_affinity='raw')
    assert not hasattr(SKDFeatureLoss(), 'channel_affinity')
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'affinity'"):
        mca_channel(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), affinity='cosine')


def naive_teacher_rms(t):
    b = t.shape[0]
    return torch.sqrt((t**2).reshape(b, -1).sum(dim=1) / t[0].numel()).reshape(b, 1, 1, 1) + 1e-6


LEVEL_SHAPES = [(2, 4, 6, 6), (2, 12, 3, 3), (2, 8, 4, 4)]


def level_pairs():
    return [features(shape, seed=30 + i) for i, shape in enumerate(LEVEL_SHAPES)]


# --------------------------------------------------------------------------------------------------------------
# feature_norm, level_reduction
# --------------------------------------------------------------------------------------------------------------
def test_teacher_rms_matches_normalising_by_hand_in_value_and_student_gradient():
    pairs = level_pairs()
    students = [s.clone().requires_grad_() for s, _ in pairs]
    teachers = [t.clone().requires_grad_() for _, t in pairs]  # must stay out of the graph, the RMS included
    loss, parts = SKDFeatureLoss(feature_norm='teacher_rms', sigma=0.5)(students, teachers)
    loss.backward()
    ref_students = [s.clone().requires_grad_() for s, _ in pairs]
    rms = [naive_teacher_rms(t) for _, t in pairs]
    ref_loss, ref_parts = naive_skd_loss([s / r for s, r in zip(ref_students, rms)],
                                         [t / r for (_, t), r in zip(pairs, rms)],
                                         sigma=0.5)
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-9, atol=1e-12)
    for key in ref_parts:
        torch.testing.assert_close(parts[key], ref_parts[key].detach(), rtol=1e-9, atol=1e-12)
    for mine, ref in zip(students, ref_students):
        torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-7, atol=1e-10)
    assert all(t.grad is None for t in teachers)


def test_teacher_rms_makes_the_loss_scale_invariant_per_sample():
    pairs = level_pairs()
    students, teachers = [s for s, _ in pairs], [t for _, t in pairs]
    normed, plain = SKDFeatureLoss(feature_norm='teacher_rms'), SKDFeatureLoss()
    base = normed(students, teachers)[0]
    per_sample = torch.tensor([10.0, 0.1], dtype=torch.float64).reshape(2, 1, 1, 1)
    for k in (10.0, per_sample):
        scaled = normed([s * k for s in students], [t * k for t in teachers])[0]
        # not exact only because of the 1e-6 added to the RMS
        torch.testing.assert_close(scaled, base, rtol=1e-5, atol=0)
        assert not torch.allclose(
            plain([s * k for s in students], [t * k for t in teachers])[0], plain(students, teachers)[0], rtol=1e-3)
    assert not torch.allclose(base, plain(students, teachers)[0], rtol=1e-3)


def test_level_reduction_mean_divides_by_levels_times_branches():
    pairs = level_pairs()
    teachers = [t for _, t in pairs]
    branches = ['direct', 'channel']
    results = {}
    for reduction in ('sum', 'mean'):
        students = [s.clone().requires_grad_() for s, _ in pairs]
        loss_fn = SKDFeatureLoss(branches=branches, level_reduction=reduction, mca_weight=0.5)
        loss, parts = loss_fn(students, teachers)
        loss.backward()
        results[reduction] = loss.detach(), parts, [s.grad for s in students]
    (sum_loss, sum_parts, sum_grads), (mean_loss, mean_parts, mean_grads) = results['sum'], results['mean']
    count = len(LEVEL_SHAPES) * len(branches)
    torch.testing.assert_close(mean_loss, sum_loss / count, rtol=1e-12, atol=0)
    assert list(mean_parts) == ['l_gk_direct', 'l_gk_channel']
    for key in sum_parts:
        torch.testing.assert_close(mean_parts[key], sum_parts[key] / count, rtol=1e-12, atol=0)
    torch.testing.assert_close(sum(mean_parts.values()), mean_loss, rtol=1e-12, atol=0)
    for mean_grad, sum_grad in zip(mean_grads, sum_grads):
        torch.testing.assert_close(mean_grad, sum_grad / count, rtol=1e-10, atol=0)


def test_normalised_form_defaults_to_the_paper_reading_bit_for_bit():
    pairs = level_pairs()
    results = []
    for fn in (SKDFeatureLoss(), SKDFeatureLoss(feature_norm='none', level_reduction='sum')):
        students = [s.clone().requires_grad_() for s, _ in pairs]
        loss, parts = fn(students, [t for _, t in pairs])
        loss.backward()
        results.append((loss.detach(), parts, [s.grad for s in students]))
    (loss, parts, grads), (ref_loss, ref_parts, ref_grads) = results
    assert torch.equal(loss, ref_loss) and all(torch.equal(parts[k], ref_parts[k]) for k in ref_parts)
    assert all(torch.equal(g, ref) for g, ref in zip(grads, ref_grads))
    assert (SKDFeatureLoss().feature_norm, SKDFeatureLoss().level_reduction) == ('none', 'sum')
    assert SKDFeatureLoss(feature_norm=None).feature_norm == 'none'  # --force_yml reads 'none' as None


def test_normalised_form_built_through_basicsr_build_loss():
    from basicsr.losses import build_loss
    loss_fn = build_loss({'type': 'SKDFeatureLoss', 'loss_weight': 0.1, 'feature_norm': 'teacher_rms',
                          'level_reduction': 'mean'})
    assert "feature_norm='teacher_rms', level_reduction='mean'" in repr(loss_fn)
    pairs = level_pairs()
    students, teachers = [s for s, _ in pairs], [t for _, t in pairs]
    rms = [naive_teacher_rms(t) for t in teachers]
    ref, _ = naive_skd_loss([s / r for s, r in zip(students, rms)], [t / r for t, r in zip(teachers, rms)],
                            loss_weight=0.1)
    torch.testing.assert_close(loss_fn(students, teachers)[0], ref / (len(LEVEL_SHAPES) * 3))


# --------------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('option, value, message', [
    ('feature_norm', 'batch_rms', r"feature_norm='batch_rms' is not allowed: use one of \('none', 'teacher_rms'\)"),
    ('feature_norm', 'None', r"feature_norm='None' is not allowed"),
    ('level_reduction', 'max', r"level_reduction='max' is not allowed: use one of \('sum', 'mean'\)"),
    ('level_reduction', 'none', r"level_reduction='none' is not allowed"),
    ('branches', ['direct', 'spectral'], r"branches: 'spectral' is not allowed: use any of \('direct', 'channel'"),
    ('branches', [], r'branches=\(\) is not allowed: enable at least one of'),
    ('branches', ['direct', 'direct'], r"branches=\['direct', 'direct'\] is not allowed: each of"),
    ('spatial_softmax', 'columns', r"spatial_softmax='columns' is not allowed: use one of \('contracted', 'rows'\)"),
    ('sigma', 0, r'sigma=0 is not allowed: use a number > 0'),
    ('sigma', -1.0, r'sigma=-1.0 is not allowed'),
    ('temperature', 0, r"temperature=0 is not allowed: use 'auto'"),
    ('temperature', -1e-6, r'temperature=-1e-06 is not allowed'),
    ('temperature', 'hot', r"temperature='hot' is not allowed"),
    ('temperature', '1e-6', r'YAML reads 1e-6 as a string: write it with a dot \(1.0e-6\) or as !!float 1e-6'),
    ('reduction', 'none', r"reduction='none' is not allowed: use one of \('mean', 'sum'\)"),
    ('chunk_size', 0, r'chunk_size=0 is not allowed: use an integer >= 1'),
    ('level_weights', [1.0, -1.0], r'level_weights=\[1.0, -1.0\] is not allowed'),
])
def test_bad_options_are_refused_at_construction(option, value, message):
    with pytest.raises(ValueError, match=message):
        SKDFeatureLoss(**{option: value})


def test_bad_inputs_are_refused_in_forward():
    loss_fn = SKDFeatureLoss()
    a, b = torch.zeros(2, 4, 4, 4), torch.zeros(2, 8, 4, 4)
    with pytest.raises(ValueError, match=r'got 2 student and 1 teacher features'):
        loss_fn([a, a], [a])
    with pytest.raises(ValueError, match=r'got 0 student and 0 teacher features'):
        loss_fn([], [])
    with pytest.raises(ValueError,
                       match=r'level 1: student feature \(2, 4, 4, 4\) and teacher feature '
                       r'\(2, 8, 4, 4\) must both be'):
        loss_fn([a, a], [a, b])
    with pytest.raises(ValueError, match=r'level 0: student feature \(2, 4, 16\)'):
        loss_fn([a.flatten(2)], [a.flatten(2)])
    with pytest.raises(ValueError, match=r'level_weights has 1 entries but 2 levels'):
        SKDFeatureLoss(level_weights=[1.0])([a, a], [a, a])
    with pytest.raises(ValueError, match=r'weight must have shape \(2,\)'):
        loss_fn([a], [a], torch.ones(2, 1))


def test_bad_inputs_are_refused_by_the_functions():
    a, b = torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 5)
    with pytest.raises(ValueError, match=r'mca_channel needs .* got student \(2, 4, 4, 4\) and teacher \(2, 4, 4, 5\)'):
        mca_channel(a, b)
    with pytest.raises(ValueError, match=r'mca_spatial needs'):
        mca_spatial(a, b)
    with pytest.raises(ValueError, match=r"softmax='cols' is not allowed"):
        mca_spatial(a, a, softmax='cols')
    with pytest.raises(ValueError, match=r'temperature=0.0 is not allowed'):
        mca_channel(a, a, temperature=0.0)
    with pytest.raises(ValueError, match=r'gaussian_kernel_distance needs inputs of one shape'):
        gaussian_kernel_distance(a, b)
    with pytest.raises(ValueError, match=r'sigma=0 is not allowed'):
        gaussian_kernel_distance(a, a, sigma=0)


if __name__ == '__main__':
    os.makedirs(osp.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, 'w') as f:
        json.dump(make_golden(), f, indent=1)
        f.write('\n')
    print(f'wrote {GOLDEN}')
