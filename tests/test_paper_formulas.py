"""An oracle for the paper's formulas, written from the equations alone, against the library.

Everything here is plain Python on nested lists, one explicit loop per index of the equations, and shares nothing
with the library or with the vectorised naive reference of tests/test_skd_loss.py. Per sample, S (student) and T
(teacher) are C x N matrices (N = H * W):

* channel branch   S_c = softmax(T S^T / lambda) S, the softmax over the student channels (the columns of T S^T);
* spatial branch   S_s = S softmax(T^T S / lambda), with the softmax of A = T^T S / lambda (N x N, A[p][q] the
  teacher token p against the student token q) normalised either over p, the index the product with S sums over
  ('contracted', each output token a convex combination of student tokens), or along each row of A ('rows');
* Gaussian kernel  GK(x, y) = 1 - exp(-mean((x - y)^2) / (2 sigma^2)), the mean over the C * N elements;
* L_GK = sum_i [GK(S, T) + alpha1 (GK(S_c, T) + GK(S_s, T))] over the distilled levels i, times alpha2
  (``loss_weight``), the GK terms reduced over the batch by mean (or sum), a level weighed by its ``level_weights``.

lambda 'auto' is the square root of the contracted dimension: N for the channel affinity, C for the spatial one.
"""
import json
import math
from os import path as osp

import pytest
import torch

import skd_basicsr  # noqa: F401
from skd_basicsr.distill import SKDFeatureLoss, gaussian_kernel_distance, mca_channel, mca_spatial

GOLDEN = osp.join(osp.dirname(osp.abspath(__file__)), 'data', 'skd_loss_golden.json')


# --------------------------------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------------------------------
def as_matrices(feature):
    """(B, C, H, W) tensor -> per sample a C x N list of lists, row-major over (H, W) as in the paper's reshape."""
    return [[[float(v) for row in channel for v in row] for channel in sample] for sample in feature.tolist()]


def softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def temperature_for(temperature, contracted):
    return math.sqrt(contracted) if temperature == 'auto' else temperature


def channel_branch(S, T, temperature):
    C, N = len(S), len(S[0])
    lam = temperature_for(temperature, N)
    out = [[0.0] * N for _ in range(C)]
    for i in range(C):
        # row i of T S^T: teacher channel i against every student channel j
        logits = [sum(T[i][n] * S[j][n] for n in range(N)) / lam for j in range(C)]
        weights = softmax(logits)
        for n in range(N):
            out[i][n] = sum(weights[j] * S[j][n] for j in range(C))
    return out


def spatial_branch(S, T, temperature, reading):
    C, N = len(S), len(S[0])
    lam = temperature_for(temperature, C)
    A = [[sum(T[c][p] * S[c][q] for c in range(C)) / lam for q in range(N)] for p in range(N)]
    if reading == 'contracted':
        columns = [softmax([A[p][q] for p in range(N)]) for q in range(N)]
        P = [[columns[q][p] for q in range(N)] for p in range(N)]
    else:
        P = [softmax(A[p]) for p in range(N)]
    # (S P)[c][q] = sum_p S[c][p] P[p][q]
    return [[sum(S[c][p] * P[p][q] for p in range(N)) for q in range(N)] for c in range(C)]


def gk(X, Y, sigma):
    squares = [(x - y)**2 for row_x, row_y in zip(X, Y) for x, y in zip(row_x, row_y)]
    return 1 - math.exp(-(sum(squares) / len(squares)) / (2 * sigma**2))


def l_gk(students, teachers, loss_weight=1.0, reduction='mean', mca_weight=1.0, sigma=1.0, temperature='auto',
         branches=('direct', 'channel', 'spatial'), spatial_softmax='contracted', level_weights=None, **ignored):
    """(total, {l_gk_<branch>: value}) of L_GK over the levels, from the equations."""
    parts = {f'l_gk_{branch}': 0.0 for branch in ('direct', 'channel', 'spatial') if branch in branches}
    for level, (s, t) in enumerate(zip(students, teachers)):
        samples = list(zip(as_matrices(s), as_matrices(t)))
        scale = loss_weight * (1.0 if level_weights is None else level_weights[level])
        scale /= len(samples) if reduction == 'mean' else 1
        for S, T in samples:
            if 'direct' in branches:
                parts['l_gk_direct'] += scale * gk(S, T, sigma)
            if 'channel' in branches:
                parts['l_gk_channel'] += scale * mca_weight * gk(channel_branch(S, T, temperature), T, sigma)
            if 'spatial' in branches:
                S_s = spatial_branch(S, T, temperature, spatial_softmax)
                parts['l_gk_spatial'] += scale * mca_weight * gk(S_s, T, sigma)
    return sum(parts.values()), parts


# --------------------------------------------------------------------------------------------------------------
# the library against it
# --------------------------------------------------------------------------------------------------------------
def pair(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=gen, dtype=torch.float64)
    return s, 0.7 * s + 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)


def from_matrices(matrices, shape):
    return torch.tensor(matrices, dtype=torch.float64).reshape(shape)


SHAPES = [(2, 3, 2, 3), (1, 4, 3, 3)]


@pytest.mark.parametrize('temperature', ['auto', 0.5, 3.0])
@pytest.mark.parametrize('shape', SHAPES)
def test_channel_branch(shape, temperature):
    s, t = pair(shape, 1)
    expected = [channel_branch(S, T, temperature) for S, T in zip(as_matrices(s), as_matrices(t))]
    torch.testing.assert_close(mca_channel(s, t, temperature), from_matrices(expected, shape), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('reading', ['contracted', 'rows'])
@pytest.mark.parametrize('temperature', ['auto', 0.5, 3.0])
@pytest.mark.parametrize('shape', SHAPES)
def test_spatial_branch(shape, temperature, reading):
    s, t = pair(shape, 2)
    expected = [spatial_branch(S, T, temperature, reading) for S, T in zip(as_matrices(s), as_matrices(t))]
    torch.testing.assert_close(mca_spatial(s, t, temperature, softmax=reading), from_matrices(expected, shape),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('sigma', [0.5, 1.0, 3.0])
def test_gaussian_kernel(sigma):
    x, y = pair((3, 2, 2, 3), 3)
    expected = [gk(X, Y, sigma) for X, Y in zip(as_matrices(x), as_matrices(y))]
    torch.testing.assert_close(gaussian_kernel_distance(x, y, sigma), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('options', [
    {},
    {'loss_weight': 0.1, 'mca_weight': 0.5, 'sigma': 2.0, 'temperature': 0.8},
    {'spatial_softmax': 'rows', 'branches': ['direct', 'spatial'], 'level_weights': [1.0, 0.25], 'reduction': 'sum'},
])
def test_feature_loss_and_its_parts(options):
    students, teachers = zip(*(pair(shape, 10 + i) for i, shape in enumerate(SHAPES)))
    total, parts = l_gk(students, teachers, **options)
    loss, lib_parts = SKDFeatureLoss(**options)(list(students), list(teachers))
    assert loss.item() == pytest.approx(total, rel=1e-9)
    assert list(lib_parts) == list(parts)
    assert {k: v.item() for k, v in lib_parts.items()} == pytest.approx(parts, rel=1e-9)


def test_the_two_spatial_readings_are_what_their_names_say():
    S, T = (as_matrices(x)[0] for x in pair((1, 2, 2, 2), 4))
    # a near-infinite temperature makes either softmax uniform: every output token is the mean student token
    for reading in ('contracted', 'rows'):
        flat = spatial_branch(S, T, 1e12, reading)
        for c in range(2):
            assert all(v == pytest.approx(sum(S[c]) / 4) for v in flat[c])
    # 'contracted' makes each output token a convex combination of student tokens: inside their range per channel
    contracted = spatial_branch(S, T, 0.3, 'contracted')
    for c in range(2):
        assert all(min(S[c]) - 1e-12 <= v <= max(S[c]) + 1e-12 for v in contracted[c])


def test_golden_file_holds_what_the_equations_give():
    with open(GOLDEN) as f:
        golden = json.load(f)
    students = [torch.tensor(s, dtype=torch.float64) for s in golden['students']]
    teachers = [torch.tensor(t, dtype=torch.float64) for t in golden['teachers']]
    for name, case in golden['cases'].items():
        total, parts = l_gk(students, teachers, **case['options'])
        assert case['loss'] == pytest.approx(total, rel=1e-9), name
        assert case['parts'] == pytest.approx(parts, rel=1e-9), name
