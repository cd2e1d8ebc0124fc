"""DEV model selection: importance weights lean toward the target, the control variate, the per-text loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fanbu.errors import DomainError
from fanbu.unlabeled.selection import dev_risk, importance_weights, per_text_loss


def test_validation_rows_that_look_like_the_target_weigh_more():
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(200, 4, generator=generator)
    target = torch.randn(200, 4, generator=generator) + torch.tensor([2.0, 0, 0, 0])
    validation = torch.tensor([[-2.0, 0, 0, 0], [0.0, 0, 0, 0], [2.0, 0, 0, 0]])
    weights = importance_weights(source, target, validation)
    assert weights[0] < weights[1] < weights[2]
    same = importance_weights(source, source.clone(), source[:50])
    assert np.allclose(same, 1.0, atol=0.35)  # no shift: weights near one


def test_dev_risk_is_the_mean_loss_under_equal_weights_and_favours_the_model_right_on_target_like_rows():
    losses = np.array([0.2, 0.4, 0.6, 0.8])
    assert dev_risk(losses, np.ones(4)) == pytest.approx(0.5)
    weights = np.array([0.1, 0.1, 3.0, 3.0])  # the last two rows look like the target
    right_there = np.array([1.0, 1.0, 0.1, 0.1])
    wrong_there = np.array([0.1, 0.1, 1.0, 1.0])
    assert dev_risk(right_there, weights) < dev_risk(wrong_there, weights)


def test_per_text_loss_and_bad_input():
    probabilities = np.array([[0.9, 0.1], [0.25, 0.75]])
    assert per_text_loss(probabilities, np.array([0, 0])) == pytest.approx([-np.log(0.9), -np.log(0.25)])
    with pytest.raises(ValueError, match="equal shape"):
        dev_risk(np.ones(3), np.ones(2))
    with pytest.raises(DomainError, match="empty"):
        importance_weights(torch.zeros(0, 2), torch.zeros(3, 2), torch.zeros(1, 2))
