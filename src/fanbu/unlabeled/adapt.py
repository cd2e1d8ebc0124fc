"""One domain-adaptation run through the one loop: labelled source batches beside unlabelled target batches.

Every method sees the same data in the same order (each step draws ``batch_size`` source rows and
``target_batch_size`` pool rows, source-only included) and takes ``steps`` optimiser steps. The source
validation split is evaluated after every epoch for the record and chooses self-training's threshold;
no choice reads the target's labels. The run ends with its last weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import f1_score
from torch import Tensor, nn

from fanbu.errors import DomainError
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer
from fanbu.train.terms import LossTerm, TaskLoss
from fanbu.unlabeled.features import FeatureClassifier, PairPlan, pair_forward
from fanbu.unlabeled.methods import METHODS, AdaptConfig, MethodContext
from fanbu.unlabeled.pseudo import choose_threshold, pseudo_label

Labelled = tuple[Tensor, Tensor]  # features (n, d), labels (n,)


@dataclass
class AdaptResult:
    """A trained model and how its run went (``threshold``/``pseudo_labelled``: self-training only)."""

    model: FeatureClassifier
    method: str
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    threshold: float | None = None
    pseudo_labelled: int | None = None
    pool: int = 0


def score(model: nn.Module, data: Labelled, labels: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class F1 (by label name) of ``model`` on ``data``."""
    features, gold = data
    predicted = model.predict_proba(features).argmax(axis=-1)  # (n,)
    truth = gold.numpy()
    per_class = f1_score(truth, predicted, labels=list(range(len(labels))), average=None, zero_division=0)
    return {
        "acc": float(np.mean(predicted == truth)),
        "macro_f1": float(np.mean(per_class)),
        "f1": {name: float(value) for name, value in zip(labels, per_class, strict=True)},
        "n": len(truth),
    }


def _train(model: FeatureClassifier, plan: PairPlan, config: AdaptConfig, steps: int, terms: list[LossTerm],
           validation: Labelled, progress: bool) -> list[dict[str, float]]:
    train = TrainConfig(
        epochs=math.ceil(steps / len(plan)), max_steps=steps, batch_size=config.batch_size, lr=config.lr,
        weight_decay=config.weight_decay, warmup_ratio=0.1, seed=plan.seed, restore_best=False, progress=progress,
    )

    def evaluate(trained: nn.Module) -> dict[str, float]:
        predicted = trained.predict_proba(validation[0]).argmax(axis=-1)
        return {"score": float(np.mean(predicted == validation[1].numpy()))}

    trainer = Trainer(model, plan, train, [TaskLoss(), *terms], forward=pair_forward, evaluate=evaluate,
                      description=config.method)
    return trainer.fit(resume=False).state.history


def adapt(config: AdaptConfig, source: Labelled, pool: Tensor, validation: Labelled, num_labels: int,
          progress: bool = False) -> AdaptResult:
    """Train a :class:`FeatureClassifier` on ``source`` (labelled) and ``pool`` (unlabelled target) with
    ``config.method``; ``validation`` is labelled source text, for the record and self-training's threshold.

    Raises:
        DomainError: the pool is empty.
    """
    if pool.shape[0] == 0:
        raise DomainError(
            f"adapt.method {config.method!r}: the unlabeled pool is empty; give unlabeled target texts (check "
            "shift.target and shift.mapping, or max_unlabeled)"
        )
    entry = METHODS.get(config.method)
    width = source[0].shape[1]
    model = FeatureClassifier(width, config.hidden, num_labels, config.dropout, seed=config.seed)
    plan = PairPlan(source[0], source[1], pool, config.batch_size, config.target_batch_size, seed=config.seed)
    context = MethodContext(config.hidden, config.steps)
    if not entry.has("pseudo_labels"):
        history = _train(model, plan, config, config.steps, entry.impl(config, context), validation, progress)
        return AdaptResult(model, config.method, config.steps, history, pool=pool.shape[0])
    first = int(config.steps * config.warmup_share)
    history = _train(model, plan, config, first, entry.impl(config, context), validation, progress)
    threshold: float | None = config.threshold if isinstance(config.threshold, float) else None
    if config.threshold == "validation":
        probs = model.predict_proba(validation[0])  # (validation, labels)
        threshold = choose_threshold(probs.max(axis=-1), probs.argmax(axis=-1) == validation[1].numpy())
    pseudo = pseudo_label(model.predict_proba(pool), threshold)
    second = PairPlan(source[0], source[1], pool, config.batch_size, config.target_batch_size, seed=config.seed + 1)
    terms = entry.impl(config, MethodContext(config.hidden, config.steps - first, pseudo))
    history += _train(model, second, config, config.steps - first, terms, validation, progress)
    return AdaptResult(model, config.method, config.steps, history, threshold, pseudo.kept, pool.shape[0])
