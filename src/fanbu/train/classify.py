"""Multi-head text classification on an encoder handle, through the one loop.

The glue every classifier-training stage uses: tasks (one head each) become a :class:`TextPlan`, the
validation score is the mean accuracy over the tasks' validation splits, and ``TaskLoss`` is the
default term. Other terms are passed in beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from fanbu.evaluate.metrics import classification_metrics
from fanbu.models.encoder import EncoderHandle
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import ForwardFn, LossTerm, TaskLoss, classifier_forward


def evaluate_heads(
    handle: EncoderHandle, splits: Mapping[str, tuple[Sequence[str], Sequence[int]]], batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of each head on its ``(texts, labels)``."""
    return score_heads(handle, splits, batch_size)[0]


def score_heads(
    handle: EncoderHandle, splits: Mapping[str, tuple[Sequence[str], Sequence[int]]], batch_size: int = 64
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Metrics per head (as :func:`evaluate_heads`) and, per head, which texts it got right ("1") or
    wrong ("0") in the split's order: what a paired bootstrap over the test texts resamples."""
    metrics, outcomes = {}, {}
    for head, (texts, labels) in splits.items():
        predictions = handle.predict(list(texts), head, batch_size=batch_size)
        metrics[head] = classification_metrics(predictions, list(labels), len(handle.labels[head]))
        outcomes[head] = "".join(
            "1" if int(p) == int(y) else "0" for p, y in zip(predictions, labels, strict=True)
        )
    return metrics, outcomes


def train_heads(
    handle: EncoderHandle,
    train: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    config: TrainConfig,
    validation: Mapping[str, tuple[Sequence[str], Sequence[int]]] | None = None,
    terms: Sequence[LossTerm] | None = None,
    checkpoint_dir: str | Path | None = None,
    description: str = "train",
    forward: ForwardFn = classifier_forward,
) -> TrainResult:
    """Train ``handle``'s encoder and heads on every task in ``train`` (task name = head name).

    Args:
        handle: An encoder handle that already has a head per task.
        train: Task name -> (texts, labels).
        config: Loop settings; ``config.metric`` may be ``score`` (mean validation accuracy).
        validation: Task name -> (texts, labels) for evaluation and early stopping.
        terms: Loss contributors; default ``[TaskLoss()]``.
        checkpoint_dir: Checkpoints for resume; ``None`` disables them.
        description: Progress-bar label.
        forward: Maps (model, batch) to named outputs; terms may need more than logits.
    """
    missing = [name for name in train if name not in handle.labels]
    if missing:
        raise ValueError(f"no head for tasks {missing}; add them with handle.add_head(name, label_names)")
    tasks = [TaskData(name, list(texts), [int(y) for y in labels]) for name, (texts, labels) in train.items()]
    plan = TextPlan(
        tasks,
        handle.tokenize,
        batch_size=config.batch_size,
        seed=config.seed,
        group_by_length=config.group_by_length,
    )

    def evaluate(model: nn.Module) -> dict[str, float]:
        results = evaluate_heads(handle, validation or {})
        metrics = {f"{task}.acc": r["accuracy"] for task, r in results.items()}
        metrics["score"] = sum(r["accuracy"] for r in results.values()) / max(1, len(results))
        return metrics

    trainer = Trainer(
        handle.model,
        plan,
        config,
        list(terms) if terms else [TaskLoss()],
        forward=forward,
        evaluate=evaluate if validation else None,
        checkpoint_dir=checkpoint_dir,
        description=description,
    )
    return trainer.fit()
