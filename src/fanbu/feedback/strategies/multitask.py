"""Multi-task learning on the swarm's soft labels: one shared trunk, a head per domain, trained jointly.

Every expert labels *every* domain's transfer texts (and the unlabeled ones) on its own head, so each
text teaches all heads at once through the shared encoder; sampling is balanced, so each head gets
as many rows as the largest and, within a head, every source domain is equally represented.
"""

from __future__ import annotations

from pydantic import Field

from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, check_experts, register_strategy
from fanbu.feedback.shared.fit import distil_swarm
from fanbu.feedback.shared.soft_targets import TeacherConfig
from fanbu.feedback.strategies.swarm import SwarmTraining


def _all_texts() -> TeacherConfig:
    return TeacherConfig(pool="all")


class MultitaskConfig(SwarmTraining):
    """Settings of ``multitask``: joint training of all heads on the experts' soft labels."""

    teachers: TeacherConfig = Field(
        default_factory=_all_texts, description="How the experts label the texts (pool: all by default)."
    )
    balanced: bool = Field(True, description="Balance rows across heads and source domains (oversampling).")


@register_strategy(
    "multitask",
    summary="joint multi-task training of a shared trunk and per-domain heads on the swarm's soft labels",
    reference="https://arxiv.org/abs/1706.05098",
    config=MultitaskConfig,
)
def multitask(ctx: FeedbackContext, config: MultitaskConfig) -> StrategyOutput:
    """Train a copy of ``ctx.large`` on every head at once, with balanced sampling."""
    check_experts(ctx, "multitask")
    ctx, synthetic, augmented = config.augmented(ctx, "multitask")
    start, started = config.starting_point(ctx)
    output = distil_swarm(
        ctx,
        "multitask",
        config.teachers,
        config.alpha,
        0.0,
        config.selection_tolerance,
        config.continual,
        config.train,
        balanced=config.balanced,
        relation="multitask",
        start=start,
        frozen_layers=config.frozen_layers,
        layer_lr_floor=config.swarm_lr_floor,
    )
    output.details.update({"balanced": config.balanced, **started, **augmented})
    output.synthetic = synthetic
    return output
