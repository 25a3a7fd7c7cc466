"""Cheap spatial MCA forms (local windows, pooled tokens), their choice per level and the chunked fallback.

Each form is checked against a naive reference written out below: explicit per-window and per-block loops around
the full N x N spatial affinity, with the softmax over the index each reading names.
"""
import math

import pytest
import torch

import skd_basicsr  # noqa: F401  (applies compat, registers the loss)
from skd_basicsr.distill import attention, skd_loss
from skd_basicsr.distill.mca import mca_spatial, mca_spatial_pooled, mca_spatial_window, pool_tokens
from skd_basicsr.distill.skd_loss import SKDFeatureLoss


# --------------------------------------------------------------------------------------------------------------
# naive reference
# --------------------------------------------------------------------------------------------------------------
def naive_spatial(s, t, temperature='auto', softmax='contracted'):
    b, c, h, w = s.shape
    s_mat, t_mat = s.reshape(b, c, h * w), t.reshape(b, c, h * w)
    lam = math.sqrt(c) if temperature == 'auto' else temperature
    logits = t_mat.transpose(1, 2) @ s_mat / lam  # (B, N, N), [p, q] = <T_p, S_q>
    probs = torch.softmax(logits, dim=1 if softmax == 'contracted' else 2)
    return (s_mat @ probs).reshape(b, c, h, w)


def naive_window(s, t, window, temperature='auto', softmax='contracted'):
    """Every window on its own; slicing cuts the last row and column of windows short."""
    out = torch.zeros_like(s)
    for top in range(0, s.shape[2], window):
        for left in range(0, s.shape[3], window):
            cell = (slice(None), slice(None), slice(top, top + window), slice(left, left + window))
            out[cell] = naive_spatial(s[cell], t[cell], temperature, softmax)
    return out


def naive_pool(x, k):
    """Mean of each k x k block, the blocks at the bottom and right edges cut short."""
    rows = []
    for top in range(0, x.shape[2], k):
        cells = [x[:, :, top:top + k, left:left + k].mean(dim=(2, 3)) for left in range(0, x.shape[3], k)]
        rows.append(torch.stack(cells, dim=-1))
    return torch.stack(rows, dim=-2)


def naive_pooled(s, t, k, temperature='auto', softmax='contracted'):
    return naive_spatial(naive_pool(s, k), naive_pool(t, k), temperature, softmax)


def naive_gk(x, y):
    return 1 - torch.exp(-((x - y)**2).flatten(1).mean(dim=1) / 2)


def features(shape, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=gen, dtype=dtype)
    t = 0.5 * s + torch.randn(shape, generator=gen, dtype=dtype)
    return s, t


def run_with_grads(fn, s, t):
    """Output of fn and the gradients w.r.t. s and t of a fixed random projection of it."""
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    out = fn(s, t)
    probe = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
    (out * probe).sum().backward()
    return out.detach(), s.grad, t.grad


def assert_same_values_and_grads(fn, ref, s, t, rtol=1e-7, atol=1e-9):
    for mine, theirs in zip(run_with_grads(fn, s, t), run_with_grads(ref, s, t)):
        torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------------------
# local form
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('softmax', ['contracted', 'rows'])
@pytest.mark.parametrize('window, temperature', [(2, 'auto'), (3, 0.7), (4, 'auto'), (5, 2.0)])
def test_window_matches_naive_with_and_without_remainders(window, temperature, softmax):
    s, t = features((2, 4, 6, 8), seed=1)  # 3 and 5 leave remainders on both sides, 4 on the height only
    assert_same_values_and_grads(lambda a, b: mca_spatial_window(a, b, window, temperature, softmax, chunk_size=5),
                                 lambda a, b: naive_window(a, b, window, temperature, softmax), s, t)


@pytest.mark.parametrize('softmax', ['contracted', 'rows'])
@pytest.mark.parametrize('window', [8, 100])
def test_window_covering_the_feature_is_the_global_form(window, softmax):
    s, t = features((2, 8, 8, 8), seed=2, dtype=torch.float32)
    assert_same_values_and_grads(lambda a, b: mca_spatial_window(a, b, window, softmax=softmax),
                                 lambda a, b: mca_spatial(a, b, softmax=softmax),
                                 s,
                                 t,
                                 rtol=0,
                                 atol=1e-6)


def test_window_larger_than_one_side_only():
    s, t = features((1, 4, 3, 9), seed=3)  # windows 4 x 4 become 3 x 4 and 3 x 1
    assert_same_values_and_grads(lambda a, b: mca_spatial_window(a, b, 4), lambda a, b: naive_window(a, b, 4), s, t)


# --------------------------------------------------------------------------------------------------------------
# pooled form
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size, max_tokens, factor', [
    ((8, 8), 16, 2),
    ((7, 10), 20, 2),
    ((7, 10), 16, 3),
    ((7, 10), 2, 7),
    ((7, 10), 70, 1),
])
def test_pool_tokens_picks_the_smallest_factor_that_fits(size, max_tokens, factor):
    x, _ = features((2, 3) + size, seed=4)
    pooled = pool_tokens(x, max_tokens)
    assert pooled.shape[-2:] == (math.ceil(size[0] / factor), math.ceil(size[1] / factor))
    assert pooled.shape[-2] * pooled.shape[-1] <= max_tokens
    torch.testing.assert_close(pooled, naive_pool(x, factor), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('softmax', ['contracted', 'rows'])
@pytest.mark.parametrize('size, max_tokens, factor', [((8, 8), 16, 2), ((7, 10), 16, 3)])
def test_pooled_matches_naive(size, max_tokens, factor, softmax):
    s, t = features((2, 4) + size, seed=5)
    assert_same_values_and_grads(lambda a, b: mca_spatial_pooled(a, b, max_tokens, 0.8, softmax, chunk_size=3),
                                 lambda a, b: naive_pooled(a, b, factor, 0.8, softmax), s, t)


def test_pooled_with_enough_tokens_is_the_global_form():
    s, t = features((2, 4, 5, 6), seed=6, dtype=torch.float32)
    assert pool_tokens(s, 30) is s
    torch.testing.assert_close(mca_spatial_pooled(s, t, 30), mca_spatial(s, t), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------
# chunked fallback, float64
# --------------------------------------------------------------------------------------------------------------
FORMS = {
    'global': lambda s, t, **kw: mca_spatial(s, t, **kw),
    'window': lambda s, t, **kw: mca_spatial_window(s, t, 3, **kw),
    'pooled': lambda s, t, **kw: mca_spatial_pooled(s, t, 12, **kw),
}


@pytest.mark.parametrize('chunk_size', [1, 7, 1000])
@pytest.mark.parametrize('form', list(FORMS))
def test_forced_chunked_fallback_equals_the_fused_path(form, chunk_size):
    s, t = features((2, 6, 7, 8), seed=7)
    fn = FORMS[form]
    assert_same_values_and_grads(lambda a, b: fn(a, b, attention='chunked', chunk_size=chunk_size),
                                 lambda a, b: fn(a, b), s, t)


@pytest.mark.parametrize('form', list(FORMS))
def test_inputs_without_a_fused_kernel_fall_back_to_chunks(form, monkeypatch):
    s, t = features((2, 6, 7, 8), seed=8, dtype=torch.float32)
    fused = run_with_grads(FORMS[form], s, t)

    def no_sdpa(*args, **kwargs):
        raise AssertionError('SDPA called although no fused kernel takes the inputs')

    # as on CUDA for float64 or a head dimension the kernels refuse
    monkeypatch.setattr(attention, '_fused_attention_available', lambda q, k, v: False)
    monkeypatch.setattr(attention.F, 'scaled_dot_product_attention', no_sdpa)
    for mine, theirs in zip(run_with_grads(lambda a, b: FORMS[form](a, b, chunk_size=5), s, t), fused):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_fused_kernel_is_used_on_cpu_for_every_float_dtype():
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        tokens = torch.zeros(2, 3, 16, 48, dtype=dtype)
        assert attention._fused_attention_available(tokens, tokens, tokens)


# --------------------------------------------------------------------------------------------------------------
# the loss: per-level forms, float64, logged parts
# --------------------------------------------------------------------------------------------------------------
LEVEL_SHAPES = [(2, 4, 8, 8), (2, 6, 6, 6), (2, 8, 4, 4)]


def level_pairs(dtype=torch.float64):
    return [features(shape, seed=10 + i, dtype=dtype) for i, shape in enumerate(LEVEL_SHAPES)]


@pytest.mark.parametrize('opt, naive_forms', [
    (dict(), ['global', 'global', 'global']),
    (dict(spatial_window=3), [('window', 3), ('window', 3), ('window', 3)]),
    (dict(spatial_tokens=9), [('pooled', 3), ('pooled', 2), ('pooled', 2)]),
    (dict(spatial_window=[4, None, None], spatial_tokens=[None, 9, None]), [('window', 4), ('pooled', 2), 'global']),
    (dict(spatial_window=[None, None, 2], spatial_attention='chunked'), ['global', 'global', ('window', 2)]),
])
def test_per_level_options_pick_the_form_of_each_level(opt, naive_forms):
    pairs = level_pairs()
    students = [s.clone().requires_grad_() for s, _ in pairs]
    loss, parts = SKDFeatureLoss(branches=['direct', 'spatial'], **opt)(students, [t for _, t in pairs])
    loss.backward()

    ref_students = [s.clone().requires_grad_() for s, _ in pairs]
    ref_spatial = 0
    for s, (_, t), form in zip(ref_students, pairs, naive_forms):
        if form == 'global':
            projected, target = naive_spatial(s, t), t
        elif form[0] == 'window':
            projected, target = naive_window(s, t, form[1]), t
        else:
            projected, target = naive_pooled(s, t, form[1]), naive_pool(t, form[1])
        ref_spatial = ref_spatial + naive_gk(projected, target).mean()
    ref_direct = sum(naive_gk(s, t).mean() for s, (_, t) in zip(ref_students, pairs))
    (ref_direct + ref_spatial).backward()

    assert list(parts) == ['l_gk_direct', 'l_gk_spatial']
    torch.testing.assert_close(parts['l_gk_spatial'], ref_spatial.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss.detach(), (ref_direct + ref_spatial).detach(), rtol=1e-9, atol=1e-12)
    for mine, ref in zip(students, ref_students):
        torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-7, atol=1e-10)


def test_the_pooled_level_is_mca_spatial_pooled_against_the_pooled_teacher(monkeypatch):
    pairs = level_pairs()
    calls = []

    def spy(s, t, max_tokens, *args):
        calls.append((s.shape, max_tokens, args))
        return mca_spatial_pooled(s, t, max_tokens, *args)

    monkeypatch.setattr(skd_loss, 'mca_spatial_pooled', spy)
    loss_fn = SKDFeatureLoss(branches=['spatial'], temperature=0.7, spatial_tokens=[None, 9, None])
    loss, _ = loss_fn([s for s, _ in pairs], [t for _, t in pairs])
    assert calls == [(torch.Size(LEVEL_SHAPES[1]), 9, (0.7, 'contracted', 256, 'auto'))]
    s, t = pairs[1]
    pooled = naive_gk(mca_spatial_pooled(s, t, 9, 0.7), naive_pool(t, 2)).mean()
    rest = sum(naive_gk(mca_spatial(s, t, 0.7), t).mean() for s, t in (pairs[0], pairs[2]))
    torch.testing.assert_close(loss, pooled + rest, rtol=1e-12, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_every_form_keeps_the_dtype_and_the_part_names(dtype):
    pairs = level_pairs(dtype)
    loss_fn = SKDFeatureLoss(spatial_window=[4, None, None], spatial_tokens=[None, 9, None])
    loss, parts = loss_fn([s.requires_grad_() for s, _ in pairs], [t for _, t in pairs])
    loss.backward()
    assert loss.dtype == dtype and all(s.grad.dtype == dtype for s, _ in pairs)
    assert list(parts) == ['l_gk_direct', 'l_gk_channel', 'l_gk_spatial']
    torch.testing.assert_close(sum(parts.values()), loss.detach())


def test_built_through_basicsr_build_loss_with_yaml_style_lists():
    from basicsr.losses import build_loss
    loss_fn = build_loss({'type': 'SKDFeatureLoss', 'spatial_window': [8, 8, None], 'spatial_attention': 'chunked'})
    assert loss_fn.spatial_window == [8, 8, None] and loss_fn.spatial_tokens is None
    assert 'spatial_window=[8, 8, None]' in repr(loss_fn)


# --------------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('opt, message', [
    (dict(spatial_window=1), r'spatial_window=1 is not allowed: use an integer >= 2 \(1 would make'),
    (dict(spatial_window=2.5), r'spatial_window=2.5 is not allowed'),
    (dict(spatial_window=True), r'spatial_window=True is not allowed'),
    (dict(spatial_window='8'), r"spatial_window='8' is not allowed"),
    (dict(spatial_tokens=0), r'spatial_tokens=0 is not allowed: use an integer >= 2'),
    (dict(spatial_window=[]), r'spatial_window=\[\] is not allowed: use None, an integer >= 2 for every level, or'),
    (dict(spatial_tokens=[64, 1]), r'spatial_tokens=\[64, 1\] is not allowed: .* each None \(exact global form\)'),
    (dict(spatial_window=8, spatial_tokens=64), r'both choose a form at level\(s\) \[0\]: a level takes at most'),
    (dict(spatial_window=8, spatial_tokens=[None, 64]), r'both choose a form at level\(s\) \[1\]'),
    (dict(spatial_window=[8, None], spatial_tokens=[64, 16]), r'both choose a form at level\(s\) \[0\]'),
    (dict(spatial_window=[8, None], spatial_tokens=[None, 64, None]), r'are lists of different lengths'),
    (dict(spatial_attention='fast'), r"spatial attention='fast' is not allowed: use one of \('auto', 'chunked'\)"),
])
def test_bad_options_are_refused_at_construction(opt, message):
    with pytest.raises(ValueError, match=message):
        SKDFeatureLoss(**opt)


def test_per_level_lists_must_match_the_levels_fed():
    pairs = level_pairs()[:2]
    students, teachers = [s for s, _ in pairs], [t for _, t in pairs]
    with pytest.raises(ValueError, match=r'spatial_window has 3 entries but 2 levels are distilled \(give one entry'):
        SKDFeatureLoss(spatial_window=[8, None, None])(students, teachers)
    with pytest.raises(ValueError, match=r'spatial_tokens has 1 entries but 2 levels are distilled'):
        SKDFeatureLoss(spatial_tokens=[16])(students, teachers)


def test_bad_arguments_are_refused_by_the_functions():
    a, b = torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 5)
    with pytest.raises(ValueError, match=r'mca_spatial_window needs .* got student \(2, 4, 4, 4\)'):
        mca_spatial_window(a, b, 2)
    with pytest.raises(ValueError, match=r'mca_spatial_pooled needs'):
        mca_spatial_pooled(a, b, 4)
    with pytest.raises(ValueError, match=r'window=1 is not allowed'):
        mca_spatial_window(a, a, 1)
    with pytest.raises(ValueError, match=r'max_tokens=1 is not allowed'):
        pool_tokens(a, 1)
    with pytest.raises(ValueError, match=r"softmax='cols' is not allowed"):
        mca_spatial_window(a, a, 2, softmax='cols')
    with pytest.raises(ValueError, match=r"spatial attention='fused' is not allowed"):
        mca_spatial(a, a, attention='fused')
