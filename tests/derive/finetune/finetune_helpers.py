"""Helpers of the fine-tuning tests: a separable sentiment task and quick loop settings."""

from __future__ import annotations

import random

from fanbu.train import TrainConfig

LABELS = ["neg", "pos"]
SENTIMENT_WORDS = (
    ["bad", "terrible", "poor", "sad", "negative"],
    ["good", "excellent", "great", "happy", "positive"],
)
FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "people", "time", "year"]


def sentiment_task(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` short texts: two sentiment words among filler words; the label is the sentiment."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 5) + rng.sample(SENTIMENT_WORDS[label], 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def quick(**overrides) -> TrainConfig:
    """Loop settings for tiny runs: no progress bar, no warm-up."""
    settings = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0, "progress": False}
    settings.update(overrides)
    return TrainConfig(**settings)
