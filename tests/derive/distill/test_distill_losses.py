"""The loss terms on hand-made tensors, and the configs' checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fanbu.config import validate
from fanbu.derive.distill import (
    DistillConfig,
    LMDistillConfig,
    MaskedTaskLoss,
    kd_loss,
    relation_kl,
    relation_scores,
    token_kd_loss,
)
from fanbu.errors import ConfigError
from fanbu.train import Batch


def manual_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(teacher, dim=-1)
    return (p * (torch.log(p) - torch.log_softmax(student, dim=-1))).sum(-1).mean()


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(5, 3)
    assert kd_loss(teacher.clone(), teacher, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.randn(5, 3), teacher, temperature=2.0).item() > 0.01


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_is_t_squared_times_kl_of_softened_distributions(temperature: float) -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    expected = temperature**2 * manual_kl(student / temperature, teacher / temperature)
    assert kd_loss(student, teacher, temperature).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_loss_rejects_mismatched_heads() -> None:
    with pytest.raises(ValueError, match="must have the same labels"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_masked_task_loss_ignores_unlabeled_rows() -> None:
    torch.manual_seed(2)
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, -1, 2, -1])
    batch = Batch({"input_ids": torch.zeros(4, 2, dtype=torch.long)}, {"labels": labels}, "t")
    loss = MaskedTaskLoss(weight=0.5).losses({"logits": logits}, batch, torch.nn.Identity())["task"]
    expected = 0.5 * F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert loss.item() == pytest.approx(expected.item())

    none = Batch(batch.inputs, {"labels": torch.full((4,), -1)}, "t")
    zero = MaskedTaskLoss().losses({"logits": logits}, none, torch.nn.Identity())["task"]
    assert zero.item() == 0.0 and zero.requires_grad  # still part of the graph


def test_relation_kl_is_zero_for_equal_relations_and_ignores_padding() -> None:
    torch.manual_seed(3)
    q, k = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    scores = relation_scores(q, k, heads=2)
    assert scores.shape == (2, 2, 5, 5)
    assert relation_kl(scores, scores, mask).item() == pytest.approx(0.0, abs=1e-6)
    other = relation_scores(torch.randn(2, 5, 8), k, heads=2)
    base = relation_kl(other, scores, mask)
    assert base.item() > 0.01
    changed = other.clone()
    changed[1, :, 3:, :] = 7.0  # padded queries of the second example
    changed[1, :, :, 3:] = -7.0  # padded keys
    assert relation_kl(changed, scores, mask).item() == pytest.approx(base.item(), rel=1e-6)


def test_relation_scores_need_divisible_width() -> None:
    with pytest.raises(ValueError, match="not divisible into 3 relation heads"):
        relation_scores(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), heads=3)


def test_token_kd_loss_ignores_padding() -> None:
    torch.manual_seed(4)
    teacher = torch.randn(2, 4, 10)
    student = torch.randn(2, 4, 10)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert token_kd_loss(teacher, teacher, mask, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    base = token_kd_loss(student, teacher, mask, 2.0)
    padded = student.clone()
    padded[1, 2:] = 100.0
    assert base.item() > 0.01
    assert token_kd_loss(padded, teacher, mask, 2.0).item() == pytest.approx(base.item(), rel=1e-6)
    tokens = torch.cat([student[0], student[1, :2]]), torch.cat([teacher[0], teacher[1, :2]])
    assert base.item() == pytest.approx(4 * manual_kl(tokens[0] / 2, tokens[1] / 2).item(), rel=1e-5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"alpha": 1.5}, "alpha: Input should be less than or equal to 1"),
        ({"alpha": -0.1}, "alpha: Input should be greater than or equal to 0"),
        ({"temperature": 0}, "temperature: Input should be greater than 0"),
        ({"alpha": 0.0}, "nothing is distilled"),
        ({"hidden_wieght": 1.0}, "hidden_wieght: unknown key"),
    ],
)
def test_distill_config_errors_name_the_field(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(DistillConfig, data)


def test_distill_config_defaults() -> None:
    config = DistillConfig()
    assert (config.temperature, config.alpha, config.cache_teacher) == (2.0, 0.7, True)
    assert config.train.epochs == 5 and config.train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"metric": "accuracy"}, "causal-LM evaluation reports 'score'"),
        ({"metric": "ppl", "mode": "max"}, "needs train.mode 'min'"),
        ({"metric": "score", "mode": "min"}, "needs train.mode 'max'"),
    ],
)
def test_lm_distill_config_checks_the_metric(train, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(LMDistillConfig, {"train": train})
    assert validate(LMDistillConfig, {"train": {"metric": "ppl", "mode": "min"}}).train.metric == "ppl"
