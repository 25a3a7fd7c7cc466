"""The distillation study's L_GK (benchmarks/study/feature_loss.py): the channel-affinity candidate of issue 10.

``channel_affinity`` lives in StudySKDFeatureLoss, which adds it through the product's hook; ``feature_norm`` and
``level_reduction`` moved into the product (tests/test_skd_loss.py) and are passed on. The candidate is checked
against the naive reference of tests/test_skd_loss.py and a naive cosine affinity written out below; the defaults
must be the product's paper reading, bit for bit.
"""
import pytest
import torch
from torch.nn import functional as F

import skd_basicsr  # noqa: F401  (applies compat, registers the product's losses)
from benchmarks.study.feature_loss import StudySKDFeatureLoss, mca_channel_affinity
from skd_basicsr.distill import SKDFeatureLoss, mca_channel

from test_skd_loss import (assert_loss_matches_naive, assert_same_values_and_grads, features, naive_mca_channel,
                           LEVEL_SHAPES, level_pairs, naive_skd_loss, naive_teacher_rms)


# --------------------------------------------------------------------------------------------------------------
# naive reference
# --------------------------------------------------------------------------------------------------------------
def naive_cosine_channel_affinity(s, t, temperature='auto'):
    """(B, C_teacher, C_student): softmax over student channels of the cosine of whole channel rows / lambda."""
    s_rows, t_rows = F.normalize(s.flatten(2), dim=2), F.normalize(t.flatten(2), dim=2)
    logits = torch.einsum('bin,bjn->bij', t_rows, s_rows) / (0.1 if temperature == 'auto' else temperature)
    return torch.softmax(logits, dim=2)


def naive_mca_channel_cosine(s, t, temperature='auto'):
    probs = naive_cosine_channel_affinity(s, t, temperature)
    return torch.einsum('bij,bjn->bin', probs, s.flatten(2)).reshape(s.shape)  # the value stays the raw S


# --------------------------------------------------------------------------------------------------------------
# channel_affinity
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('opt', [
    {
        'channel_affinity': 'cosine'
    },
    {
        'channel_affinity': 'cosine',
        'temperature': 0.5,
        'branches': ['channel']
    },
])
def test_loss_matches_naive_values_parts_and_student_gradients(opt):
    naive_opt = {k: v for k, v in opt.items() if k != 'channel_affinity'}
    assert_loss_matches_naive(StudySKDFeatureLoss(**opt), naive_channel=naive_mca_channel_cosine, **naive_opt)


@pytest.mark.parametrize('temperature', ['auto', 0.3, 5.0])
@pytest.mark.parametrize('shape', [(2, 4, 5, 3), (1, 16, 4, 4)])
def test_mca_channel_cosine_matches_naive(shape, temperature):
    s, t = features(shape, seed=40)
    assert_same_values_and_grads(lambda a, b: mca_channel_affinity(a, b, temperature, affinity='cosine'),
                                 lambda a, b: naive_mca_channel_cosine(a, b, temperature), s, t)


def test_mca_channel_cosine_auto_temperature_is_a_tenth_not_sqrt_n():
    s, t = features((2, 4, 8, 8), seed=41)
    auto = mca_channel_affinity(s, t, affinity='cosine')
    torch.testing.assert_close(auto, mca_channel_affinity(s, t, 0.1, affinity='cosine'), rtol=0, atol=0)
    # sqrt(N) = 8 leaves logits in [-1/8, 1/8]: close to every channel being the mean of the student channels
    flat = mca_channel_affinity(s, t, 8.0, affinity='cosine')
    channel_mean = s.mean(dim=1, keepdim=True).expand_as(s)
    assert (flat - channel_mean).abs().max() < (auto - channel_mean).abs().max() / 2


def test_cosine_channel_affinity_ignores_feature_magnitudes_in_the_logits_only():
    s, t = features((2, 6, 4, 5), seed=42)
    cosine = mca_channel_affinity(s, t, 0.3, affinity='cosine')
    torch.testing.assert_close(mca_channel_affinity(s, 5 * t, 0.3, affinity='cosine'), cosine, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(mca_channel(s, 5 * t, 0.3), mca_channel(s, t, 0.3), rtol=1e-3)
    # scaling student rows leaves the affinity as it was; the value it multiplies is the scaled raw S
    row_scale = torch.tensor([0.2, 1.0, 3.0, 7.0, 0.5, 2.0], dtype=s.dtype).reshape(1, 6, 1, 1)
    expected = torch.einsum('bij,bjn->bin', naive_cosine_channel_affinity(s, t, 0.3), (s * row_scale).flatten(2))
    torch.testing.assert_close(mca_channel_affinity(s * row_scale, t, 0.3, affinity='cosine'),
                               expected.reshape(s.shape))


def test_raw_channel_affinity_is_the_products_mca_channel_bit_for_bit():
    s, t = features((2, 6, 4, 5), seed=44)
    for temperature in ('auto', 0.3):
        assert_same_values_and_grads(lambda a, b: mca_channel_affinity(a, b, temperature),
                                     lambda a, b: mca_channel(a, b, temperature),
                                     s,
                                     t,
                                     rtol=0,
                                     atol=0)
    assert_same_values_and_grads(lambda a, b: mca_channel_affinity(a, b, 0.3, 'raw'),
                                 lambda a, b: naive_mca_channel(a, b, 0.3), s, t)


def test_cosine_channel_affinity_sends_gradient_to_the_student_only():
    s, t = features((2, 4, 4, 4), seed=43, dtype=torch.float32)
    student, teacher = s.requires_grad_(), t.requires_grad_()
    loss, parts = StudySKDFeatureLoss(branches=['channel'], channel_affinity='cosine')([student], [teacher])
    loss.backward()
    assert list(parts) == ['l_gk_channel'] and loss.item() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


# --------------------------------------------------------------------------------------------------------------
# defaults, registry, validation
# --------------------------------------------------------------------------------------------------------------
def test_study_options_default_to_the_paper_reading_bit_for_bit():
    loss_fn = StudySKDFeatureLoss()
    assert isinstance(loss_fn, SKDFeatureLoss)
    assert (loss_fn.feature_norm, loss_fn.level_reduction, loss_fn.channel_affinity) == ('none', 'sum', 'raw')
    explicit = StudySKDFeatureLoss(feature_norm='none', level_reduction='sum', channel_affinity='raw')
    pairs = level_pairs()
    results = []
    for fn in (SKDFeatureLoss(), loss_fn, explicit):
        students = [s.clone().requires_grad_() for s, _ in pairs]
        loss, parts = fn(students, [t for _, t in pairs])
        loss.backward()
        results.append((loss.detach(), parts, [s.grad for s in students]))
    product = results[0]
    for loss, parts, grads in results[1:]:
        assert torch.equal(loss, product[0])
        assert list(parts) == list(product[1]) and all(torch.equal(parts[k], product[1][k]) for k in parts)
        assert all(torch.equal(g, ref) for g, ref in zip(grads, product[2]))


def test_study_class_in_the_normalised_form_is_the_products_bit_for_bit():
    """The study measured its normalised L_GK as StudySKDFeatureLoss; the demo and basicsr distill ship it as
    SKDFeatureLoss with the same options: the two must be one loss, value, parts and gradients."""
    from skd_basicsr.tools.distill import NORMALISED_FEATURE_LOSS

    opt = {k: v for k, v in NORMALISED_FEATURE_LOSS.items() if k != 'type'}
    pairs = level_pairs()
    results = []
    for fn in (SKDFeatureLoss(**opt), StudySKDFeatureLoss(**opt)):
        students = [s.clone().requires_grad_() for s, _ in pairs]
        loss, parts = fn(students, [t for _, t in pairs])
        loss.backward()
        results.append((loss.detach(), parts, [s.grad for s in students]))
    (product, product_parts, product_grads), (study, study_parts, study_grads) = results
    assert torch.equal(product, study) and product.item() > 0
    assert list(product_parts) == list(study_parts)
    assert all(torch.equal(product_parts[k], study_parts[k]) for k in product_parts)
    assert all(torch.equal(g, ref) for g, ref in zip(study_grads, product_grads))
    # and it is not the paper's form: the options reach the loss
    paper, _ = SKDFeatureLoss()([s for s, _ in pairs], [t for _, t in pairs])
    assert not torch.allclose(paper, product)


def test_study_options_built_through_basicsr_build_loss():
    from basicsr.losses import build_loss
    opt = {'feature_norm': 'teacher_rms', 'level_reduction': 'mean', 'channel_affinity': 'cosine'}
    loss_fn = build_loss({'type': 'StudySKDFeatureLoss', 'loss_weight': 0.1, **opt})
    assert isinstance(loss_fn, StudySKDFeatureLoss)
    assert (loss_fn.feature_norm, loss_fn.level_reduction, loss_fn.channel_affinity) == tuple(opt.values())
    assert loss_fn.loss_weight == 0.1
    assert "feature_norm='teacher_rms', level_reduction='mean', channel_affinity='cosine'" in repr(loss_fn)
    pairs = level_pairs()
    students, teachers = [s for s, _ in pairs], [t for _, t in pairs]
    rms = [naive_teacher_rms(t) for t in teachers]
    ref, _ = naive_skd_loss([s / r for s, r in zip(students, rms)], [t / r for t, r in zip(teachers, rms)],
                            loss_weight=0.1,
                            naive_channel=naive_mca_channel_cosine)
    torch.testing.assert_close(loss_fn(students, teachers)[0], ref / (len(LEVEL_SHAPES) * 3))


@pytest.mark.parametrize('option, value, message', [
    ('channel_affinity', 'dot', r"channel_affinity='dot' is not allowed: use one of \('raw', 'cosine'\)"),
    ('channel_affinity', 'Cosine', r"channel_affinity='Cosine' is not allowed"),
])
def test_bad_options_are_refused_at_construction(option, value, message):
    with pytest.raises(ValueError, match=message):
        StudySKDFeatureLoss(**{option: value})


def test_bad_arguments_are_refused_by_the_function_and_product_options_still_checked():
    a, b = torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 5)
    with pytest.raises(ValueError, match=r'mca_channel needs .* got student \(2, 4, 4, 4\) and teacher \(2, 4, 4, 5\)'):
        mca_channel_affinity(a, b, affinity='cosine')
    with pytest.raises(ValueError, match=r'temperature=0.0 is not allowed'):
        mca_channel_affinity(a, a, temperature=0.0, affinity='cosine')
    with pytest.raises(ValueError, match=r"affinity='cos' is not allowed: use one of \('raw', 'cosine'\)"):
        mca_channel_affinity(a, a, affinity='cos')
    with pytest.raises(ValueError, match=r"spatial_softmax='columns' is not allowed"):
        StudySKDFeatureLoss(spatial_softmax='columns', feature_norm='teacher_rms')
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'feature_nrom'"):
        StudySKDFeatureLoss(feature_nrom='teacher_rms')
