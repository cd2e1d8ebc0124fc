"""Training a head on real and synthetic feature rows with soft targets, through the one training loop.

Targets are class distributions ``(n, labels)``: one-hot for labelled rows (head training), a teacher's
probabilities for distillation; :class:`~fanbu.train.terms.TaskLoss`'s cross-entropy accepts both. Every
run takes exactly ``steps`` optimiser steps, however many rows it has, so augmented and plain runs compare
at equal steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import DomainError
from fanbu.train.batching import PlanItem
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer
from fanbu.train.terms import Batch, TaskLoss
from fanbu.unlabeled.features import FeatureClassifier

TASK = "augment"


class StudentConfig(Strict):
    """The head trained on (possibly augmented) features."""

    steps: int = Field(300, ge=1, description="Optimiser steps of every run (augmented or not).")
    batch_size: int = Field(32, ge=1, description="Rows per step.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (linear warm-up and decay).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    hidden: int = Field(256, ge=2, description="Width of the bottleneck before the linear head.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after the bottleneck.")


class SoftPlan:
    """Seeded epochs over feature rows with target distributions (one-hot or a teacher's probabilities)."""

    def __init__(self, features: Tensor, targets: Tensor, batch_size: int, seed: int = 0) -> None:
        if features.shape[0] == 0 or features.shape[0] != targets.shape[0]:
            raise DomainError(f"{features.shape[0]} training rows and {targets.shape[0]} targets; the training set "
                              "(real plus synthetic rows) must be non-empty, one target per row")
        self.features, self.targets = features.float(), targets.float()  # (n, d), (n, labels)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return math.ceil(int(self.features.shape[0]) / self.batch_size)

    def schedule(self, epoch: int) -> list[PlanItem]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.features.shape[0])
        return [PlanItem(TASK, tuple(int(i) for i in order[i : i + self.batch_size]))
                for i in range(0, len(order), self.batch_size)]

    def make(self, item: PlanItem) -> Batch:
        index = torch.tensor(item.indices, dtype=torch.long)
        return Batch({"features": self.features[index]}, {"labels": self.targets[index]}, item.task, index)


def _forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    return model(batch.inputs["features"])


def one_hot(labels: Tensor, num_labels: int) -> Tensor:
    """``(n, num_labels)`` one-hot targets of integer ``labels`` ``(n,)``."""
    return torch.nn.functional.one_hot(labels.long(), num_labels).float()


def train_student(features: Tensor, targets: Tensor, config: StudentConfig, seed: int = 0) -> FeatureClassifier:
    """A :class:`FeatureClassifier` trained ``config.steps`` steps on ``features`` ``(n, d)`` towards ``targets``
    ``(n, labels)``; it ends with its last weights (nothing here reads a validation or test split)."""
    plan = SoftPlan(features, targets, config.batch_size, seed)
    model = FeatureClassifier(features.shape[1], config.hidden, targets.shape[1], config.dropout, seed=seed)
    train = TrainConfig(epochs=math.ceil(config.steps / len(plan)), max_steps=config.steps,
                        batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
                        warmup_ratio=0.1, seed=seed, restore_best=False, progress=False)
    Trainer(model, plan, train, [TaskLoss()], forward=_forward, description="augment").fit(resume=False)
    model.eval()
    return model


def accuracy(model: FeatureClassifier, features: Tensor, labels: Tensor) -> float:
    """Share of ``labels`` ``(n,)`` that ``model`` predicts from ``features`` ``(n, d)``."""
    return float(np.mean(model.predict_proba(features).argmax(axis=-1) == labels.numpy()))
