"""What domain adaptation trains on: a frozen encoder's pooled features, computed once per text, and a
trainable bottleneck and head over them.

Freezing the whole encoder and caching its outputs makes every method's training step cost
microseconds instead of a transformer pass, so all methods, seeds and the upper bound fit on 2 CPU cores.
The bottleneck is what the alignment terms move: they see its output as ``features``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.models.encoder import EncoderHandle
from fanbu.models.tokenize import Truncation
from fanbu.train.adaptation import TARGET_INDEX
from fanbu.train.batching import PlanItem
from fanbu.train.terms import Batch

TASK = "shift"


class FeatureConfig(Strict):
    """The frozen encoder whose pooled outputs the methods train on."""

    encoder: str = Field("package:all-MiniLM-L6-v2", description="Encoder source (package:NAME, directory or hub id).")
    max_length: int = Field(128, ge=8, description="Tokens of each text the encoder reads.")
    truncation: Truncation = Field("head_tail", description="Keep the head, or the head and tail, of long texts.")
    batch_size: int = Field(64, ge=1, description="Texts per encoder pass while caching features.")


def encode_texts(handle: EncoderHandle, texts: Sequence[str], batch_size: int = 64) -> Tensor:
    """Mean-pooled features ``(n, hidden)`` of ``texts`` from the frozen ``handle``, in their order."""
    unique = list(dict.fromkeys(texts))
    features, _ = handle.encode(unique, batch_size=batch_size)  # (unique, hidden)
    row = {text: i for i, text in enumerate(unique)}
    return features[torch.tensor([row[t] for t in texts], dtype=torch.long)]  # (n, hidden)


class FeatureStore:
    """Features of each text, encoded once: a text met again (in another seed's split) costs nothing."""

    def __init__(self, handle: EncoderHandle, batch_size: int = 64) -> None:
        self.handle, self.batch_size = handle, batch_size
        self.rows: dict[str, Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Features ``(n, hidden)`` of ``texts``, in their order."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if missing:
            for text, row in zip(missing, encode_texts(self.handle, missing, self.batch_size), strict=True):
                self.rows[text] = row
        if not texts:
            return torch.zeros(0, self.handle.model.hidden_size)
        return torch.stack([self.rows[t] for t in texts])  # (n, hidden)


def load_encoder(config: FeatureConfig) -> EncoderHandle:
    """The frozen encoder of ``config`` in eval mode."""
    handle = EncoderHandle.from_source(config.encoder, max_length=config.max_length)
    handle.truncation = config.truncation
    handle.model.requires_grad_(False)
    handle.model.eval()
    return handle


class FeatureClassifier(nn.Module):
    """``head(bottleneck(x))`` over cached encoder features; the bottleneck's output is the aligned feature.

    Args:
        in_features: Width of the cached features.
        hidden: Width of the bottleneck.
        num_labels: Classes of the head.
        dropout: Dropout after the bottleneck.
        seed: Seeds the initialisation (the global generators are left alone).
    """

    def __init__(self, in_features: int, hidden: int, num_labels: int, dropout: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.bottleneck = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout))
            self.head = nn.Linear(hidden, num_labels)

    def forward(self, features: Tensor, target_features: Tensor | None = None) -> dict[str, Tensor]:
        """Source ``features``/``logits`` and, with target rows, ``target_features``/``target_logits``."""
        source = self.bottleneck(features)  # (batch, hidden)
        out = {"features": source, "logits": self.head(source)}  # logits: (batch, labels)
        if target_features is not None:
            target = self.bottleneck(target_features)  # (target_batch, hidden)
            out.update({"target_features": target, "target_logits": self.head(target)})
        return out

    @torch.no_grad()
    def predict_proba(self, features: Tensor) -> np.ndarray:
        """Class probabilities ``(n, labels)`` in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(features)["logits"], dim=-1).numpy()
        finally:
            self.train(was_training)


def pair_forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """The loop's forward for :class:`PairPlan` batches."""
    return model(batch.inputs["features"], batch.inputs.get("target_features"))


@dataclass(frozen=True)
class PairItem(PlanItem):
    """A source batch (``indices``) and the target pool rows drawn beside it."""

    target: tuple[int, ...] = ()


class PairPlan:
    """Batches of labelled source features, each with a batch of unlabelled target features.

    An epoch is one pass over the source in a seeded order; the target rows come from seeded passes over
    the pool, one after another, so every pool text is drawn about equally often.

    Args:
        source: Source features ``(n_s, d)``.
        labels: Source labels ``(n_s,)``.
        pool: Target features ``(n_t, d)``; ``None`` or empty: batches without target rows.
        batch_size: Source rows per batch.
        target_batch_size: Target rows per batch.
        seed: Seeds both orders.
    """

    def __init__(
        self, source: Tensor, labels: Tensor, pool: Tensor | None, batch_size: int, target_batch_size: int,
        seed: int = 0,
    ) -> None:
        if source.shape[0] == 0 or source.shape[0] != labels.shape[0]:
            raise ValueError(f"{source.shape[0]} source rows and {labels.shape[0]} labels; give a non-empty source")
        self.source, self.labels = source, labels.long()
        self.pool = pool if pool is not None and pool.shape[0] > 0 else None
        self.batch_size, self.target_batch_size, self.seed = batch_size, target_batch_size, seed

    def __len__(self) -> int:
        return math.ceil(int(self.source.shape[0]) / self.batch_size)

    def schedule(self, epoch: int) -> list[PlanItem]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.source.shape[0])
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        draws: list[int] = []
        if self.pool is not None:
            need = len(batches) * self.target_batch_size
            while len(draws) < need:
                draws.extend(int(i) for i in rng.permutation(self.pool.shape[0]))
        size = self.target_batch_size if self.pool is not None else 0
        return [
            PairItem(TASK, tuple(int(i) for i in chunk), tuple(draws[k * size : (k + 1) * size]))
            for k, chunk in enumerate(batches)
        ]

    def make(self, item: PlanItem) -> Batch:
        index = torch.tensor(item.indices, dtype=torch.long)
        inputs, targets = {"features": self.source[index]}, {"labels": self.labels[index]}
        target = getattr(item, "target", ())
        if self.pool is not None and target:
            rows = torch.tensor(target, dtype=torch.long)
            inputs["target_features"] = self.pool[rows]
            targets[TARGET_INDEX] = rows
        return Batch(inputs, targets, item.task, index)
