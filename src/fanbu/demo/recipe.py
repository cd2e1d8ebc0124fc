"""The settings of ``fanbu demo``: which benchmark slices, how to derive the small models, how to feed back.

Only the recipe schema lives here (it is what ``fanbu validate`` needs); the job itself is in
:mod:`fanbu.demo.run` and the feedback step in :mod:`fanbu.demo.feedback`.

The feedback defaults (:class:`DemoFeedback`) make **the small models just derived** the swarm, and
feed them back with ``swarm_distill`` (each domain's head taught by its own small model, LwF on every
head); ``feedback.swarm: finetune`` swaps in full-size fine-tunes of large v0 for comparison.
:mod:`fanbu.demo.feedback` explains why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fanbu.config import Strict
from fanbu.data.slices import SliceCaps
from fanbu.derive.presets import DEMO_SMALL_STAGES, copy_stages
from fanbu.derive.stages import parse_stages
from fanbu.errors import ConfigError
from fanbu.feedback.gate.promotion import GateConfig
from fanbu.feedback.recipe import ExpertDerive, StrategyList
from fanbu.train.config import TrainConfig


class BenchmarkSettings(SliceCaps):
    """Which slices of the default benchmark the demo uses (its caps are all set, stratified)."""

    max_validation: int = Field(50, ge=1, description="Cap on validation examples per task.")
    max_test: int = Field(200, ge=1, description="Cap on test examples per task (stratified).")
    max_public: int = Field(250, ge=1, description="Cap on public training examples per task (stratified).")


class DemoDerive(Strict):
    """How the demo derives one small model per feedback domain from large v0."""

    enabled: bool = Field(True, description="Derive the small models after training large v0.")
    max_train: int = Field(300, ge=1, description="Private training examples per domain for its small model.")
    transfer: Literal["none", "public"] = Field(
        "public", description="Unlabeled distillation text: none, or the domains' public slices (soft labels only)."
    )
    max_transfer: int | None = Field(
        600, ge=1, description="Cap on transfer texts per domain: its own public slice first, then the others."
    )
    stages: list = Field(
        default_factory=lambda: copy_stages(DEMO_SMALL_STAGES),
        description="The derive stages (see `fanbu stages`); the teacher is large v0.",
    )

    @field_validator("stages")
    @classmethod
    def _stages_valid(cls, stages: list[Any]) -> list[Any]:
        try:  # checked here, so that `fanbu validate` catches a bad stage before large v0 is trained
            parse_stages(stages)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return stages


def _experts() -> ExpertDerive:
    train = {"epochs": 2, "batch_size": 16, "lr": 1e-4, "warmup_ratio": 0.06}
    return ExpertDerive(stages=[{"finetune": {"mode": "full", "train": train}}], max_train=300)


def _strategies() -> list[dict[str, Any]]:
    train = {"epochs": 2, "batch_size": 16, "lr": 5e-5, "warmup_ratio": 0.1}
    return [
        {
            "swarm_distill": {
                "teachers": {"choice": "by_domain"},
                "continual": {"lwf_weight": 1.0},
                "train": train,
            }
        }
    ]


class DemoFeedback(Strict):
    """How the demo feeds the swarm back into large v0 (one generation of the cycle)."""

    enabled: bool = Field(True, description="Feed back into large v0 after deriving the small models.")
    swarm: Literal["small", "finetune"] = Field(
        "small",
        description="small: the small models the demo just derived teach large v0 (their fp32 twins; needs "
        "derive.enabled); finetune: full-size fine-tunes of large v0 on each private slice (`experts`), "
        "for comparison.",
    )
    experts: ExpertDerive = Field(
        default_factory=_experts,
        description="With swarm: finetune, how each domain's expert is derived from large v0 (private slice).",
    )
    strategies: StrategyList = Field(
        default_factory=_strategies,
        description="[{strategy: {settings}}, ...]; each makes a candidate large v1.",
    )
    gate: GateConfig = Field(default_factory=GateConfig)


class DemoRecipe(Strict):
    """Settings of ``fanbu demo``; every field can be overridden with ``key=value``."""

    model: str = Field("package:all-MiniLM-L6-v2", description="The large model: package:NAME, a directory or a hub id.")
    max_length: int = Field(
        64,
        ge=8,
        description="Tokens per text seen by the model (64 keeps the demo within 10 minutes on 2 cores; 128 "
        "adds about 4 points to large v0's accuracy and doubles the time).",
    )
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=2, batch_size=16, lr=1.5e-4, warmup_ratio=0.06)
    )
    latency_iterations: int = Field(30, ge=5, description="Batch-1 calls timed for p50/p95 latency.")
    derive: DemoDerive = Field(default_factory=DemoDerive)
    feedback: DemoFeedback = Field(default_factory=DemoFeedback)

    @model_validator(mode="after")
    def _small_swarm_needs_derive(self) -> DemoRecipe:
        if self.feedback.enabled and self.feedback.swarm == "small" and not self.derive.enabled:
            raise ValueError(
                "feedback.swarm is 'small' but derive.enabled is false: enable derive, set "
                "feedback.swarm: finetune, or set feedback.enabled: false"
            )
        return self
