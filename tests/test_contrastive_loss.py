"""L_CL (SKDContrastiveLoss) where its ratio degenerates: a negative about the positive (blind denoising at low sigma).

The paper's ratio ``d(a, p) / d(a, n)`` has a vanishing denominator when the negative nears the positive and the
student is close to both; ``negative_margin`` leaves such negatives out per sample (benchmarks/cl_negatives.py
measures the teacher feature space).
"""
import pytest
import torch

import skd_basicsr  # noqa: F401  (compat, before basicsr)
from skd_basicsr.distill import SKDContrastiveLoss

from helpers import PixelSpace, l1


def blind_batch(sigma, error=1e-3, seed=0):
    """(anchor, positive, negative): a clean positive, the student within ``error`` of it, the input at ``sigma``."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(2, 3, 16, 16, generator=g)
    anchor = clean + error * torch.randn(clean.shape, generator=g)
    return anchor.requires_grad_(True), clean, clean + sigma * torch.randn(clean.shape, generator=g)


def grad_norm(loss, anchor, positive, negative):
    anchor.grad = None
    loss(anchor, positive, negative).backward()
    return float(anchor.grad.norm())


def test_the_papers_ratio_explodes_as_the_negative_nears_the_positive_and_the_margin_bounds_it():
    paper = SKDContrastiveLoss(feature_space=PixelSpace(), negative_margin=0)
    fixed = SKDContrastiveLoss(feature_space=PixelSpace())
    far = grad_norm(paper, *blind_batch(sigma=0.1))
    near = grad_norm(paper, *blind_batch(sigma=1e-3))
    assert near > 20 * far  # the degenerate case: about 1 / sigma until the student's own error
    assert grad_norm(fixed, *blind_batch(sigma=1e-3)) == 0  # left out: no push, no pull from this term
    # far from the positive the margin changes nothing
    assert grad_norm(fixed, *blind_batch(sigma=0.1)) == pytest.approx(far, rel=1e-6)


def test_a_sample_whose_negative_is_its_positive_adds_nothing_and_the_others_keep_the_ratio():
    anchor, positive, negative = blind_batch(sigma=0.1)
    negative = negative.clone()
    negative[1] = positive[1]
    loss = SKDContrastiveLoss(feature_space=PixelSpace(), eps=1e-7)
    value = loss(anchor, positive, negative)
    first = l1(anchor, positive)[0] / (l1(anchor, negative)[0] + 1e-7)
    torch.testing.assert_close(value, first / 2)  # the batch mean counts the sample left out as 0
    value.backward()
    assert anchor.grad[1].abs().max() == 0 and anchor.grad[0].abs().max() > 0


def test_the_margin_is_relative_to_the_positives_scale():
    # the same geometry at 10x the feature scale: the same samples are kept
    anchor, positive, negative = blind_batch(sigma=0.01)
    loss = SKDContrastiveLoss(feature_space=PixelSpace(), negative_margin=0.01)
    small = loss.kept([positive], negative)
    large = loss.kept([10 * positive], 10 * negative)
    assert torch.equal(small, large)
    assert loss.kept([positive], positive).sum() == 0 and loss.kept([positive], 1 - positive).sum() == 2


@pytest.mark.parametrize('value', [-0.1, True, 'auto'])
def test_a_wrong_margin_is_refused(value):
    with pytest.raises(ValueError, match=rf'negative_margin must be a number >= 0, got {value!r}'):
        SKDContrastiveLoss(feature_space=PixelSpace(), negative_margin=value)


def test_an_anchor_on_its_negative_sends_the_ratio_to_one_over_eps_and_the_floor_bounds_it():
    """A student that starts at its input sits on the input negative: the paper's ratio is d_pos / eps there. With
    negative_floor the distance to the negative is at least that fraction of the positive's, and the term pulls only."""
    g = torch.Generator().manual_seed(1)
    positive = torch.rand(2, 3, 16, 16, generator=g)
    negative = positive + 0.1 * torch.randn(positive.shape, generator=g)
    paper = SKDContrastiveLoss(feature_space=PixelSpace(), negative_margin=0, eps=1e-7)
    floored = SKDContrastiveLoss(feature_space=PixelSpace(), negative_margin=0, negative_floor=0.5)
    anchor = negative.clone().requires_grad_(True)
    assert paper(anchor, positive, negative).item() > 1e5
    value = floored(anchor, positive, negative)
    # on the negative: d_pos = d(p, n), the denominator 0.5 * d(p, n)
    torch.testing.assert_close(value, torch.tensor(2.0), rtol=1e-5, atol=0)
    value.backward()
    # the gradient is the pull alone: that of d_pos / (0.5 d(p, n)), the floor a constant
    again = negative.clone().requires_grad_(True)
    pull = torch.autograd.grad((l1(again, positive) / (0.5 * l1(positive, negative))).mean(), again)[0]
    torch.testing.assert_close(anchor.grad, pull)
    assert anchor.grad.abs().max() > 0


def test_the_floor_changes_nothing_for_an_anchor_farther_from_the_negative_than_it():
    anchor, positive, negative = blind_batch(sigma=0.1)  # the anchor is about the positive: far from the negative
    plain = SKDContrastiveLoss(feature_space=PixelSpace())
    floored = SKDContrastiveLoss(feature_space=PixelSpace(), negative_floor=0.5)
    assert grad_norm(floored, anchor, positive, negative) == grad_norm(plain, anchor, positive, negative)
    torch.testing.assert_close(floored(anchor, positive, negative), plain(anchor, positive, negative), rtol=0, atol=0)


@pytest.mark.parametrize('value', [-0.1, 1.0, True, 'auto'])
def test_a_wrong_floor_is_refused(value):
    with pytest.raises(ValueError, match=rf'negative_floor must be a number in \[0, 1\), got {value!r}'):
        SKDContrastiveLoss(feature_space=PixelSpace(), negative_floor=value)
