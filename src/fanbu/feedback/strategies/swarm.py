"""Swarm distillation: the experts teach a copy of the large model, each on its domain's head.

Per sample the teachers are chosen by domain, or weighted by their confidence / entropy with a
threshold that drops unconfident teachers (selective transfer, as in FedMKT). The candidate learns
the mixed soft labels (KL at a temperature) together with the public hard labels, optionally matches
the experts' pooled features through learned projections (their widths may differ), and can carry the
continual safeguards. Experts that do worse than the champion on their domain's validation slice are
left out first.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.feedback.shared.augment import augment_context
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, check_experts, register_strategy
from fanbu.feedback.shared.continual import ContinualConfig
from fanbu.feedback.shared.fit import distil_swarm
from fanbu.feedback.shared.soft_targets import TeacherConfig
from fanbu.feedback.strategies.merge import MergeConfig, merge_strategy
from fanbu.models.encoder import EncoderHandle
from fanbu.synthetic import AugmentConfig
from fanbu.train.config import TrainConfig
from fanbu.train.selfsup import SSLConfig, continue_pretraining


def default_train() -> TrainConfig:
    """Loop settings for fine-tuning a large encoder on soft labels."""
    return TrainConfig(epochs=3, batch_size=16, lr=5e-5, warmup_ratio=0.1)


class SwarmTraining(Strict):
    """What every strategy that trains the champion on the swarm's soft labels shares."""

    alpha: float = Field(
        0.7, ge=0, le=1, description="Weight of the soft-label KL; the public hard labels get 1 - alpha."
    )
    selection_tolerance: float | None = Field(
        0.02,
        ge=0,
        description="Leave out experts whose validation accuracy is below the champion's by more than this; "
        "null keeps every expert.",
    )
    continual: ContinualConfig = Field(
        default_factory=ContinualConfig, description="Safeguards against forgetting."
    )
    train: TrainConfig = Field(
        default_factory=default_train,
        description="Loop settings (train.seed is replaced by the context's seed).",
    )
    frozen_layers: int | None = Field(
        None,
        ge=0,
        description="Keep the embeddings and this many of the lowest encoder layers as they start (0: "
        "the embeddings only): fewer weights drift, and backward passes stop early; null: train all.",
    )
    layer_lr: Literal["uniform", "swarm"] = Field(
        "uniform",
        description="uniform: one learning rate (train.lr); swarm: each encoder layer's rate is scaled by "
        "how much the swarm's pruned students kept and valued it (their recorded pruning importances, "
        "averaged; a layer none kept gets layer_lr_floor), the embeddings by layer_lr_floor, the heads "
        "not at all. Needs experts cut from the champion by a prune stage.",
    )
    layer_lr_floor: float = Field(
        0.1, gt=0, le=1, description="layer_lr: swarm: the factor of the layers no student kept."
    )
    start: Literal["champion", "merge"] = Field(
        "champion",
        description="champion: train a copy of the champion; merge: first merge the experts into it "
        "(same-architecture swarms, settings under `merge`), then distil: merging gives a head start, "
        "distillation (with the safeguards, which still refer to the champion) the rest.",
    )
    merge: MergeConfig = Field(
        default_factory=lambda: MergeConfig(method="average"),
        description="How the experts are merged when start is merge.",
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="Generative augmentation: kind lm adds label-conditioned texts to each domain's public "
        "slice, kept when the domain's expert and the champion both agree with their label (registered as "
        "datasets with the candidate); none: off.",
    )
    ssl: SSLConfig | None = Field(
        None,
        description="Self-supervised continued pretraining (masked-LM or SimCSE) of the starting model on "
        "the swarm's pooled unlabeled text (the context's unlabeled and collected texts and the public "
        "slices' texts, labels unread) before it is distilled; null: off.",
    )

    @model_validator(mode="after")
    def _one_source_of_rates(self) -> SwarmTraining:
        if self.layer_lr == "swarm" and self.train.lr_multipliers is not None:
            raise ValueError(
                "layer_lr: swarm sets the learning-rate factors itself; remove train.lr_multipliers, or set "
                "layer_lr: uniform to use them"
            )
        return self

    @property
    def swarm_lr_floor(self) -> float | None:
        """``layer_lr_floor`` when the layer rates come from the swarm, else ``None`` (one rate)."""
        return self.layer_lr_floor if self.layer_lr == "swarm" else None

    def augmented(self, ctx: FeedbackContext, what: str) -> tuple[FeedbackContext, list[Any], dict[str, Any]]:
        """``ctx`` with the ``augment`` switch's synthetic texts, the synthetic sets and their summary."""
        return augment_context(ctx, self.augment, what)

    def starting_point(self, ctx: FeedbackContext) -> tuple[EncoderHandle | None, dict[str, Any]]:
        """The model distillation starts from (None: a copy of the champion; else the merged experts),
        after the ``ssl`` pretraining when it is on, and what that pretraining did (its details)."""
        start = None if self.start == "champion" else merge_strategy(ctx, self.merge).handle
        if self.ssl is None:
            return start, {"start": self.start}
        model = copy.deepcopy(ctx.large) if start is None else start
        result = continue_pretraining(model, ctx.transfer_texts(), self.ssl, seed=ctx.seed, setting="ssl")
        return model, {"start": self.start, "ssl": result.summary()}


class SwarmConfig(SwarmTraining):
    """Settings of ``swarm_distill``: loss = (1 - alpha) * CE(public labels) + alpha * KL + feature term."""

    teachers: TeacherConfig = Field(
        default_factory=TeacherConfig, description="How the experts label the texts."
    )
    feature_weight: float = Field(
        0.0, ge=0, description="Weight of pooled-feature matching through a projection per expert (0: off)."
    )


@register_strategy(
    "swarm_distill",
    summary="multi-teacher distillation of the experts into the large model (by domain or "
    "confidence-weighted)",
    reference="https://arxiv.org/abs/2406.02224",
    config=SwarmConfig,
)
def swarm_distill(ctx: FeedbackContext, config: SwarmConfig) -> StrategyOutput:
    """Distil the selected experts into a copy of ``ctx.large``."""
    check_experts(ctx, "swarm_distill")
    ctx, synthetic, augmented = config.augmented(ctx, "swarm_distill")
    start, started = config.starting_point(ctx)
    output = distil_swarm(
        ctx,
        "swarm_distill",
        config.teachers,
        config.alpha,
        config.feature_weight,
        config.selection_tolerance,
        config.continual,
        config.train,
        start=start,
        frozen_layers=config.frozen_layers,
        layer_lr_floor=config.swarm_lr_floor,
    )
    output.details.update({**started, **augmented})
    output.synthetic = synthetic
    return output
