"""A tiny swarm for the merge / MoE / graft / gate tests: a champion, two experts and a poisoned one.

Built once per test session (cached) on toy tasks the tiny tokenizer reads word by word. The champion
is trained briefly on small public slices of both domains and the held-out task; each expert is a full
fine-tune of the champion on its domain's larger private slice; the poisoned expert is fine-tuned on
the same slice with shuffled labels. Tests must not modify what these functions return (deepcopy).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from feedback_helpers import COMMON_FILLER
from feedback_helpers import quick as feedback_quick

from fanbu.feedback.shared.context import FeedbackContext, Labeled
from fanbu.models.encoder import EncoderHandle
from fanbu.train import TrainConfig
from fanbu.train.classify import train_heads

TASKS: dict[str, tuple[list[str], tuple[list[str], list[str]]]] = {
    "sentiment": (
        ["neg", "pos"],
        (["bad", "terrible", "poor", "sad"], ["good", "excellent", "great", "happy"]),
    ),
    "topic": (
        ["tech", "med"],
        (["computer", "software", "hardware", "data"], ["doctor", "patient", "disease", "drug"]),
    ),
    "faith": (
        ["sport", "church"],
        (["sport", "game", "team", "sports"], ["god", "church", "religion", "human"]),
    ),
}
DOMAINS = ("sentiment", "topic")
HELDOUT = "faith"
FILLER = COMMON_FILLER + ["city", "house", "water", "room", "name", "line"]


def toy_task(task: str, n: int, seed: int, noise: float = 0.0) -> Labeled:
    """``n`` texts of filler words with one cue word of the label's list; ``noise`` flips labels."""
    rng = random.Random(f"{task}-{seed}")
    cues = TASKS[task][1]
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 6) + [rng.choice(cues[label])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(1 - label if rng.random() < noise else label)
    return texts, labels


def quick(**overrides: object) -> TrainConfig:
    """Loop settings for tiny runs: no progress bar, no warm-up, no early stopping."""
    return feedback_quick(**{"epochs": 3, "restore_best": False, **overrides})


def tiny_large(seed: int = 0, intermediate_size: int = 64, num_layers: int = 2) -> EncoderHandle:
    """A random tiny encoder with a head per domain and the held-out task."""
    handle = EncoderHandle.tiny(
        hidden_size=32, num_layers=num_layers, num_heads=4, intermediate_size=intermediate_size, seed=seed
    )
    torch.manual_seed(seed)
    for task, (labels, _) in TASKS.items():
        handle.add_head(task, labels)
    return handle


@dataclass(frozen=True)
class Swarm:
    """A champion, its experts (a poisoned one aside) and the data splits around them."""

    large: EncoderHandle
    experts: dict[str, EncoderHandle]
    poisoned: EncoderHandle  # a 'sentiment' expert fine-tuned on shuffled labels
    public: dict[str, Labeled]
    private: dict[str, Labeled]
    validation: dict[str, Labeled]
    tests: dict[str, Labeled]  # every domain and the held-out task

    def context(self, work_dir: Path, experts: dict[str, EncoderHandle] | None = None) -> FeedbackContext:
        """A feedback context over this swarm (``experts`` replaces the default pair)."""
        return FeedbackContext(
            large=self.large,
            experts=dict(experts or self.experts),
            public=self.public,
            validation=self.validation,
            work_dir=work_dir,
            seed=0,
        )


def finetune_copy(base: EncoderHandle, train: dict[str, Labeled], epochs: int = 3) -> EncoderHandle:
    """A full fine-tune of a copy of ``base`` on ``train``."""
    expert = copy.deepcopy(base)
    train_heads(expert, train, quick(epochs=epochs))
    return expert


@lru_cache(maxsize=1)
def tiny_swarm() -> Swarm:
    """Build (once) the champion, two experts and a poisoned expert."""
    public = {t: toy_task(t, 32 if t in DOMAINS else 48, seed=1) for t in TASKS}
    private = {d: toy_task(d, 96, seed=2) for d in DOMAINS}
    validation = {d: toy_task(d, 64, seed=3) for d in DOMAINS}
    tests = {t: toy_task(t, 96, seed=4) for t in TASKS}
    large = tiny_large()
    train_heads(large, public, quick(epochs=6, lr=5e-3))
    experts = {d: finetune_copy(large, {d: private[d]}) for d in DOMAINS}
    texts, labels = private["sentiment"]
    shuffled = labels[:]
    random.Random(7).shuffle(shuffled)
    poisoned = copy.deepcopy(large)
    train_heads(poisoned, {"sentiment": (texts, shuffled)}, quick(epochs=8, lr=1e-2))
    return Swarm(large, experts, poisoned, public, private, validation, tests)


def accuracy(handle: EncoderHandle, data: Labeled, head: str) -> float:
    """Accuracy of ``handle``'s ``head`` on ``data``."""
    texts, labels = data
    return float((handle.predict(texts, head) == labels).mean())
