"""Toy domains for the feedback tests: keyword topics whose public slices cover only part of the words.

Each class has six signal words; a text holds two of them among five filler words. The public slices
use only the first two words of each class, so large v0 (trained on them) knows a third of the
vocabulary; the experts train on private slices that use all six, and the unlabeled and validation
texts use all six too. The held-out task's words also appear, without meaning, among the domains'
filler words. Knowledge the experts have and v0 lacks is thus measurable.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fanbu.train import TrainConfig

DOMAINS: dict[str, dict[str, list[str]]] = {
    "tech": {
        "software": ["software", "program", "data", "model", "models", "learning"],
        "hardware": ["hardware", "computer", "system", "power", "light", "car"],
        "science": ["science", "space", "water", "air", "field", "study"],
    },
    "health": {
        "disease": ["disease", "patient", "patients", "death", "body", "life"],
        "treatment": ["treatment", "drug", "doctor", "medical", "health", "help"],
        "risk": ["risk", "problem", "problems", "question", "case", "matter"],
    },
}
HELDOUT: dict[str, dict[str, list[str]]] = {
    "mood": {
        "positive": ["good", "great", "excellent", "happy", "positive", "best"],
        "negative": ["bad", "poor", "terrible", "sad", "negative", "war"],
    },
}
# Function words every toy task here draws its filler from (_merge_fixtures too).
COMMON_FILLER = [
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
]
FILLER = COMMON_FILLER + ["very", "new", "old", "first"]
# General words in the domains' texts: the held-out task's words occur there too, without its labels,
# as general language overlaps between tasks (what lets LwF on transfer texts protect a held-out head).
GENERAL = FILLER + [w for classes in HELDOUT.values() for words in classes.values() for w in words]
PUBLIC_WORDS = 2  # signal words per class that the public slices use


def labels_of(task: str) -> list[str]:
    """Label names of a domain or held-out task."""
    return list({**DOMAINS, **HELDOUT}[task])


def make_texts(task: str, n: int, seed: int, words: int = 6) -> tuple[list[str], list[int]]:
    """``n`` texts of ``task`` using the first ``words`` signal words of each class, balanced labels."""
    classes = {**DOMAINS, **HELDOUT}[task]
    rng = random.Random(f"{task}-{seed}")
    texts, labels = [], []
    for index in range(n):
        label = index % len(classes)
        signal = rng.sample(list(classes.values())[label][:words], 2)
        tokens = rng.sample(FILLER if task in HELDOUT else GENERAL, 5) + signal
        rng.shuffle(tokens)
        texts.append(" ".join(tokens))
        labels.append(label)
    return texts, labels


def quick(**overrides) -> TrainConfig:
    """Loop settings for tiny runs: no progress bar, no warm-up, a high learning rate."""
    settings = {"epochs": 4, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0, "progress": False}
    settings.update(overrides)
    return TrainConfig(**settings)


def quick_dict(**overrides) -> dict:
    """:func:`quick` as a recipe mapping (for the strategies' ``train`` field)."""
    return quick(**overrides).model_dump()


def drift(new, old, head: str, texts: list[str]) -> float:
    """Mean total-variation distance between two handles' distributions on ``head`` over ``texts``."""
    p, q = new.predict_proba(texts, head), old.predict_proba(texts, head)
    return float(abs(p - q).sum(axis=-1).mean() / 2)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: tiny models are several times faster so on a shared, loaded CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
