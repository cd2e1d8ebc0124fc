"""Helpers of the distillation tests: a separable two-topic task and quick loop settings."""

from __future__ import annotations

import random

from fanbu.train import TrainConfig

LABELS = ["sport", "tech"]
TOPIC_WORDS = (
    ["sport", "game", "team", "sports", "play", "win"],
    ["computer", "software", "hardware", "data", "model", "science"],
)
FILLER = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "people",
    "time",
    "year",
    "very",
    "good",
    "great",
    "new",
    "old",
    "first",
]


def topic_task(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` short texts: two topic words among filler words; the label is the topic."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 5) + rng.sample(TOPIC_WORDS[label], 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def quick(**overrides) -> TrainConfig:
    """Loop settings for tiny runs: no progress bar, no warm-up."""
    settings = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0, "progress": False}
    settings.update(overrides)
    return TrainConfig(**settings)
