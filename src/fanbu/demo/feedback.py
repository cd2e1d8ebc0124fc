"""The demo's feedback step: large v0's experts feed back into it, behind the gate.

The experts are **fine-tunes of large v0 on each domain's private slice**, not the demo's small int8
models. Feeding back only helps where a teacher knows more than the champion: the small models are
pruned to a seventh of v0's size and most of them score below it (see the README's table), so expert
selection would leave them out and nothing would move. A fine-tune keeps v0's capacity, adds the
private slice's knowledge, and costs one short training per domain.

The default strategy is ``swarm_distill`` with each domain's head taught by its own expert
(``by_domain``) on the public slices, with LwF distilling v0 on every head so the held-out tasks
(BBC News, Reuters R8) are protected: one short training run, fast enough for a demo, and the
strategy the issue puts first. The gate then promotes the candidate (large v1) or rejects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field
from rich.console import Console

from fanbu.config import Strict
from fanbu.feedback.gate import GateConfig
from fanbu.feedback.recipe import ExpertDerive, ExpertsConfig, FeedbackData, FeedbackRecipe, StrategyList
from fanbu.registry import Registry

if TYPE_CHECKING:
    from fanbu.demo import DemoRecipe


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


def feed_back(recipe: DemoRecipe, registry: Registry, champion: str, console: Console) -> dict[str, Any]:
    """Derive the experts from ``champion``, run the strategies, gate, promote; print the table."""
    from fanbu.cycle.tables import print_feedback
    from fanbu.feedback.pipeline import run_feedback

    settings, feedback = recipe.benchmark, recipe.feedback
    data = FeedbackData(
        seed=settings.seed,
        public_fraction=settings.public_fraction,
        max_public=settings.max_public,
        max_validation=settings.max_validation,
        max_test=settings.max_test,
    )
    step = FeedbackRecipe(
        champion=champion,
        max_length=recipe.max_length,
        data=data,
        experts=ExpertsConfig(source="derive", derive=feedback.experts),
        strategies=feedback.strategies,
        gate=feedback.gate,
        seed=settings.seed,
    )
    console.print(
        f"[bold]Feeding the swarm back into {champion}[/] (experts: fine-tunes on the private slices)"
    )
    summary = run_feedback(step, registry)
    print_feedback(
        console, summary, title=f"candidates from {champion}, gated on every domain and held-out task"
    )
    return summary
