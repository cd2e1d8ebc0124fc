"""The naive baseline: fine-tune the large model on each expert's pseudo-labels in turn.

Each expert labels its domain's transfer texts with its argmax; a copy of the champion is then
fine-tuned on one domain after the other with plain cross-entropy. Nothing guards against
forgetting unless ``continual`` turns a safeguard on, and no expert is left out unless
``selection_tolerance`` is set: this is the baseline the other strategies must beat.
"""

from __future__ import annotations

import copy

from pydantic import Field

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, check_experts, register_strategy
from fanbu.feedback.shared.continual import ContinualConfig
from fanbu.feedback.shared.fit import fit_candidate, validation_metrics
from fanbu.feedback.shared.selection import select_experts
from fanbu.feedback.shared.soft_targets import TeacherConfig, build_targets
from fanbu.feedback.strategies.swarm import default_train
from fanbu.train.config import TrainConfig
from fanbu.train.distill.losses import MaskedTaskLoss


class SequentialConfig(Strict):
    """Settings of ``sequential``: one fine-tuning run per expert, in order."""

    order: list[str] | None = Field(None, description="Domains in training order; null: sorted by name.")
    use_unlabeled: bool = Field(False, description="Also pseudo-label the context's unlabeled texts.")
    unlabeled_per_head: int | None = Field(
        None,
        ge=1,
        description="With use_unlabeled: at most this many per domain, those nearest its own texts "
        "(as the swarm's teachers.unlabeled_per_head); null: all.",
    )
    selection_tolerance: float | None = Field(
        None, ge=0, description="Leave out experts worse than the champion by more than this; null: keep all."
    )
    continual: ContinualConfig = Field(
        default_factory=ContinualConfig, description="Safeguards against forgetting (all off by default)."
    )
    train: TrainConfig = Field(
        default_factory=default_train,
        description="Loop settings of each domain's run (train.seed is replaced by the context's seed).",
    )


@register_strategy(
    "sequential",
    summary="baseline: naive sequential fine-tuning on each expert's pseudo-labels, no safeguards",
    reference="https://arxiv.org/abs/1612.00796",
    config=SequentialConfig,
)
def sequential(ctx: FeedbackContext, config: SequentialConfig) -> StrategyOutput:
    """Fine-tune a copy of ``ctx.large`` on each kept expert's hard pseudo-labels, one domain at a time."""
    check_experts(ctx, "sequential")
    order = config.order if config.order is not None else ctx.domains
    unknown = sorted(set(order) - set(ctx.domains))
    if unknown or len(set(order)) != len(order):
        raise ConfigError(f"sequential: order {order} must list distinct domains among {ctx.domains}")
    selection = select_experts(ctx, config.selection_tolerance)
    experts = {d: ctx.experts[d] for d in selection.kept}
    teachers = TeacherConfig(use_unlabeled=config.use_unlabeled, unlabeled_per_head=config.unlabeled_per_head)
    targets = build_targets(ctx, experts, teachers, cache_dir=ctx.teacher_cache_dir)
    train = config.train.model_copy(update={"seed": ctx.seed})
    candidate = copy.deepcopy(ctx.large)
    steps, trained = 0, []
    for domain in order:
        if domain not in experts or domain not in targets:
            continue
        rows = targets[domain]
        keep = [i for i in range(len(rows)) if rows.weights[i] > 0]
        if not keep:
            continue
        rows = rows.select(keep)
        pseudo = rows.probs.argmax(dim=-1).tolist()
        result = fit_candidate(
            candidate,
            ctx,
            {domain: (rows.texts, pseudo)},
            [MaskedTaskLoss()],
            train,
            config.continual,
            f"sequential {domain}",
            evaluate_on=[domain],
        )
        steps += result.state.global_step
        trained.append(domain)
    if not trained:
        raise ConfigError(
            "sequential: no expert was kept or no domain has transfer texts; nothing to fine-tune on"
        )
    details = {
        "order": trained,
        "selection": selection.as_details(),
        "continual": config.continual.model_dump(),
    }
    metrics = {"steps": float(steps), **validation_metrics(ctx, candidate)}
    return StrategyOutput(candidate, "finetune", metrics, details)
