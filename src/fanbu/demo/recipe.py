"""The settings of ``fanbu demo``: which benchmark slices, how to derive the small models, how to feed back.

Only the recipe schema lives here (it is what ``fanbu validate`` needs); the job itself is in
:mod:`fanbu.demo.run` and the feedback step in :mod:`fanbu.demo.feedback`.

The feedback defaults (:class:`DemoFeedback`) make the experts **fine-tunes of large v0 on each
domain's private slice**, and feed them back with ``swarm_distill`` (each domain's head taught by its
own expert, LwF on every head); :mod:`fanbu.demo.feedback` explains why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fanbu.config import Strict
from fanbu.data.slices import SliceCaps
from fanbu.derive.presets import DEMO_SMALL_STAGES, copy_stages
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
    experts: ExpertDerive = Field(
        default_factory=_experts,
        description="How each domain's expert is derived from large v0 (private slice).",
    )
    strategies: StrategyList = Field(
        default_factory=_strategies,
        description="[{strategy: {settings}}, ...]; each makes a candidate large v1.",
    )
    gate: GateConfig = Field(default_factory=GateConfig)


class DemoRecipe(Strict):
    """Settings of ``fanbu demo``; every field can be overridden with ``key=value``."""

    model: str = Field("package:all-MiniLM-L6-v2", description="The large model: package:NAME, a directory or a hub id.")
    max_length: int = Field(128, ge=8, description="Tokens per text seen by the model.")
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=2, batch_size=16, lr=1.5e-4, warmup_ratio=0.06)
    )
    latency_iterations: int = Field(30, ge=5, description="Batch-1 calls timed for p50/p95 latency.")
    derive: DemoDerive = Field(default_factory=DemoDerive)
    feedback: DemoFeedback = Field(default_factory=DemoFeedback)
