"""How training-based feedback strategies train a candidate: one call into the one loop.

:func:`fit_candidate` adds the continual safeguards to a strategy's loss terms, interleaves replay
batches, and scores the candidate on ``ctx.validation`` (mean accuracy: early stopping and best-weight
restore). :func:`distil_swarm` is the shared body of ``swarm_distill`` and ``multitask``: select the
experts, build the soft targets, train a copy of the champion on them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from fanbu.errors import ConfigError, ModelError
from fanbu.feedback.shared.context import FeedbackContext, Labeled, StrategyOutput
from fanbu.feedback.shared.continual import (
    ContinualConfig,
    LwF,
    continual_strategies,
    realign_heads,
    reference_model,
    replay_data,
)
from fanbu.feedback.shared.replay_batches import MixedPlan
from fanbu.feedback.shared.selection import select_experts
from fanbu.feedback.shared.soft_losses import FeatureMatching, MainOnly, SoftLabelLoss
from fanbu.feedback.shared.soft_targets import (
    SoftTargets,
    TeacherConfig,
    balanced_indices,
    build_targets,
    champion_features,
)
from fanbu.feedback.shared.swarm_structure import swarm_layer_multipliers
from fanbu.models.encoder import EncoderHandle
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.classify import evaluate_heads
from fanbu.train.config import TrainConfig
from fanbu.train.distill.forward import distill_forward
from fanbu.train.distill.losses import MaskedTaskLoss
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import LossTerm


def validation_splits(ctx: FeedbackContext, handle: EncoderHandle) -> dict[str, Labeled]:
    """The non-empty validation slices that have a head in ``handle``."""
    return {h: v for h, v in sorted(ctx.validation.items()) if h in handle.labels and len(v[0])}


def fit_candidate(
    candidate: EncoderHandle,
    ctx: FeedbackContext,
    train: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    strategies: Sequence[LossTerm],
    config: TrainConfig,
    continual: ContinualConfig,
    description: str,
    evaluate_on: Sequence[str] | None = None,
) -> TrainResult:
    """Train ``candidate`` in place on ``train`` (head -> texts, labels with -1 = none).

    The strategies' terms see only the main batches; the safeguards of ``continual`` see every batch.
    Early stopping and best-weight restore use the validation slices of ``evaluate_on`` (default: all).
    """
    tasks = [TaskData(head, list(texts), [int(y) for y in labels]) for head, (texts, labels) in train.items()]
    main = TextPlan(tasks, candidate.tokenize, batch_size=config.batch_size, seed=config.seed)
    replay = None
    if continual.replay_fraction > 0:
        data = replay_data(ctx, candidate.labels)
        if not data:
            raise ConfigError(
                "continual.replay_fraction > 0 but the context has no public labelled slice with a head in "
                "the large model; give ctx.public or set replay_fraction: 0"
            )
        replay_tasks = [TaskData(head, texts, labels) for head, (texts, labels) in data.items()]
        replay = TextPlan(
            replay_tasks, candidate.tokenize, batch_size=config.batch_size, seed=config.seed + 1
        )
    plan = MixedPlan(main, replay, continual.replay_fraction, seed=config.seed)
    reference = reference_model(continual, ctx, candidate) if continual.realign_heads else None
    terms = [MainOnly(s) for s in strategies] + continual_strategies(
        continual, ctx, config.seed, candidate, trained=set(train), reference=reference
    )
    for term in terms:  # the champion's features are kept per context: LwF's first epoch reuses them
        if isinstance(term, LwF) and term.previous is ctx.large:
            for head, (texts, _) in train.items():
                term.prefill(head, champion_features(ctx, list(texts)))
    validation = validation_splits(ctx, candidate)
    if evaluate_on is not None:
        validation = {h: v for h, v in validation.items() if h in evaluate_on}

    def evaluate(model: nn.Module) -> dict[str, float]:
        results = evaluate_heads(candidate, validation)
        metrics = {f"{head}.acc": r["accuracy"] for head, r in results.items()}
        metrics["score"] = sum(r["accuracy"] for r in results.values()) / max(1, len(results))
        return metrics

    trainer = Trainer(
        candidate.model,
        plan,
        config,
        terms,
        forward=distill_forward,
        evaluate=evaluate if validation else None,
        description=description,
    )
    result = trainer.fit()
    candidate.model.eval()
    if reference is not None:
        untrained = [h for h in candidate.labels if h not in train and h in reference.labels]
        texts = ctx.transfer_texts()
        order = np.random.default_rng(config.seed).permutation(len(texts))[: continual.realign_samples]
        chosen = [texts[i] for i in sorted(order)]
        known = champion_features(ctx, chosen) if reference is ctx.large else None
        agreement = realign_heads(candidate, reference, untrained, chosen, continual.realign_ridge, known)
        result.last_metrics.update({f"realign.{h}.agreement": a for h, a in agreement.items()})
    return result


def validation_metrics(ctx: FeedbackContext, candidate: EncoderHandle) -> dict[str, float]:
    """Validation accuracy of the candidate and the champion per domain, and their means."""
    splits = validation_splits(ctx, candidate)
    if not splits:
        return {}
    new = evaluate_heads(candidate, splits)
    old = {head: ctx.validation_accuracy("champion", head) for head in splits}
    metrics: dict[str, float] = {}
    for head in splits:
        metrics[f"val.{head}.acc"] = new[head]["accuracy"]
        metrics[f"val.{head}.champion_acc"] = old[head]
    metrics["val.mean_acc"] = sum(r["accuracy"] for r in new.values()) / len(new)
    metrics["val.champion_mean_acc"] = sum(old.values()) / len(old)
    return metrics


def balance(targets: Mapping[str, SoftTargets], seed: int) -> dict[str, SoftTargets]:
    """Every head gets as many rows as the largest, every source within a head equally many."""
    size = max(len(t) for t in targets.values())
    return {
        h: t.select(balanced_indices(t.sources, size, seed + i))
        for i, (h, t) in enumerate(sorted(targets.items()))
    }


def distil_swarm(
    ctx: FeedbackContext,
    what: str,
    teachers: TeacherConfig,
    alpha: float,
    feature_weight: float,
    tolerance: float | None,
    continual: ContinualConfig,
    train: TrainConfig,
    balanced: bool = False,
    relation: str = "distilled",
    start: EncoderHandle | None = None,
    frozen_layers: int | None = None,
    layer_lr_floor: float | None = None,
) -> StrategyOutput:
    """Select the experts, label the transfer texts with them, and distil into a copy of the champion.

    ``start`` replaces that copy as the model trained (for example the experts merged into the
    champion); it is trained in place. ``frozen_layers`` keeps the embeddings and that many of the
    lowest encoder layers fixed (None: train everything). ``layer_lr_floor`` scales each layer's
    learning rate by what the selected experts' pruning records say of it
    (:func:`~fanbu.feedback.shared.swarm_structure.swarm_layer_multipliers` with that floor; None: one
    rate).
    """
    train = train.model_copy(update={"seed": ctx.seed})  # the context seeds every random choice
    selection = select_experts(ctx, tolerance)
    if not selection.kept:
        raise ConfigError(
            f"{what}: every expert was left out by the selection ({selection.excluded}); check the experts "
            "or raise selection_tolerance (null switches selection off)"
        )
    experts = {d: ctx.experts[d] for d in selection.kept}
    multipliers = None
    if layer_lr_floor is not None:  # before the teachers label anything: a missing record fails fast
        multipliers = swarm_layer_multipliers(ctx.large, experts, layer_lr_floor)
        train = train.model_copy(update={"lr_multipliers": multipliers})
    targets = build_targets(
        ctx, experts, teachers, features=feature_weight > 0, cache_dir=ctx.teacher_cache_dir
    )
    if not targets:
        raise ConfigError(f"{what}: no transfer texts; give the context public slices or unlabeled texts")
    if balanced:
        targets = balance(targets, ctx.seed)
    candidate = copy.deepcopy(ctx.large) if start is None else start
    if frozen_layers is not None:
        try:
            candidate.model.freeze_lower(frozen_layers)
        except ModelError as exc:
            raise ConfigError(f"{what}: {exc}") from exc
    strategies: list[LossTerm] = []
    if alpha < 1:
        strategies.append(MaskedTaskLoss(weight=1 - alpha))
    strategies.append(SoftLabelLoss(targets, alpha, teachers.temperature))
    if feature_weight > 0:
        strategies.append(
            FeatureMatching(targets, feature_weight, candidate.model.hidden_size, seed=train.seed)
        )
    data = {h: (t.texts, t.labels.tolist()) for h, t in targets.items()}
    result = fit_candidate(candidate, ctx, data, strategies, train, continual, what)
    details: dict[str, Any] = {
        "selection": selection.as_details(),
        "targets": {h: t.stats() for h, t in targets.items()},
        "continual": continual.model_dump(),
        "best_step": result.state.best_step,
        "realigned": {k: v for k, v in result.last_metrics.items() if k.startswith("realign.")},
        "lr_multipliers": multipliers,
    }
    metrics = {"steps": float(result.state.global_step), **validation_metrics(ctx, candidate)}
    return StrategyOutput(candidate, relation, metrics, details)
