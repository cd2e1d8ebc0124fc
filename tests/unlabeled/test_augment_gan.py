"""The conditional GAN in a 2-D toy: its samples move toward each class's data."""

from __future__ import annotations

import pytest
import torch

from fanbu.errors import DomainError
from fanbu.synthetic import GANConfig, train_gan

MEANS = torch.tensor([[3.0, 3.0], [-3.0, 2.0]])


def _toy(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(n // 2)  # (n,)
    return MEANS[labels] + 0.3 * torch.randn(n, 2, generator=gen), labels  # (n, 2)


def _distance(samples: torch.Tensor, labels: torch.Tensor) -> float:
    return float((samples - MEANS[labels]).norm(dim=-1).mean())


def test_the_generators_samples_move_toward_their_class_means() -> None:
    torch.set_num_threads(1)
    features, labels = _toy()
    config = GANConfig(noise=4, hidden=32, steps=400, batch_size=64, lr=2e-3, per_label=50)
    untrained = train_gan(features, labels, 2, config.model_copy(update={"steps": 1}), seed=0).gan
    trained_result = train_gan(features, labels, 2, config, seed=0)
    before = _distance(*untrained.sample_per_label(2, 50, seed=1))
    samples, sampled = trained_result.gan.sample_per_label(2, 50, seed=1)
    after = _distance(samples, sampled)
    assert after < 0.5 * before
    own = (samples - MEANS[sampled]).norm(dim=-1)
    other = (samples - MEANS[1 - sampled]).norm(dim=-1)
    assert (own < other).float().mean() > 0.9  # the label conditions the sample
    assert trained_result.steps == 400 and trained_result.rows == 200 and trained_result.gan.history


def test_an_empty_or_mismatched_training_set_is_refused() -> None:
    with pytest.raises(DomainError, match="augment.gan"):
        train_gan(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2, GANConfig(steps=1))
    with pytest.raises(DomainError, match="one label per row"):
        train_gan(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), 2, GANConfig(steps=1))
