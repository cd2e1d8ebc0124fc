"""Gradient reversal, CORAL and MMD on small tensors."""

from __future__ import annotations

import itertools

import pytest
import torch

from fanbu.train.alignment import coral_loss, dann_coefficient, grad_reverse, mmd_loss


def test_gradient_reversal_flips_the_sign_and_keeps_the_magnitude():
    x = torch.randn(4, 3, requires_grad=True)
    weights = torch.randn(4, 3)
    (grad_reverse(x, 1.0) * weights).sum().backward()
    assert torch.equal(x.grad, -weights)
    y = x.detach().clone().requires_grad_(True)
    out = grad_reverse(y, 0.5)
    assert torch.equal(out, y)  # the identity forward
    (out * weights).sum().backward()
    assert torch.allclose(y.grad, -0.5 * weights)


def test_gradient_reversal_refuses_a_negative_coefficient():
    with pytest.raises(ValueError, match=">= 0"):
        grad_reverse(torch.zeros(2, 2), -1.0)


def test_dann_coefficient_rises_from_zero_towards_one():
    values = [dann_coefficient(p / 10) for p in range(11)]
    assert values[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(values))
    assert 0.99 < values[-1] < 1.0
    assert dann_coefficient(2.0) == values[-1]  # progress is clamped to [0, 1]


@pytest.mark.parametrize("loss", [coral_loss, mmd_loss])
def test_alignment_losses_are_zero_for_identical_batches_and_positive_for_shifted(loss):
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(32, 8, generator=gen)
    assert float(loss(source, source.clone())) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.randn(32, 8, generator=gen) * 3.0 + 2.0
    assert float(loss(source, shifted)) > 1e-3
    same = torch.randn(32, 8, generator=gen)  # another sample of the source's distribution
    assert float(loss(source, same)) < float(loss(source, shifted))


def test_alignment_losses_carry_gradients_to_both_batches():
    source = torch.randn(16, 4, requires_grad=True)
    target = (torch.randn(16, 4) + 1.0).requires_grad_(True)
    (coral_loss(source, target) + mmd_loss(source, target)).backward()
    assert source.grad.abs().sum() > 0 and target.grad.abs().sum() > 0


def test_alignment_losses_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="same width"):
        coral_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2 rows"):
        coral_loss(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="positive"):
        mmd_loss(torch.zeros(4, 3), torch.ones(4, 3), bandwidths=(0.0,))
