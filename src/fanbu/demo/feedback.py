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
Those defaults are the settings :class:`~fanbu.demo.recipe.DemoFeedback` (in :mod:`fanbu.demo.recipe`).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fanbu.demo.recipe import DemoRecipe
from fanbu.feedback.recipe import ExpertsConfig, FeedbackData, FeedbackRecipe
from fanbu.registry import Registry


def feed_back(recipe: DemoRecipe, registry: Registry, champion: str, console: Console) -> dict[str, Any]:
    """Derive the experts from ``champion``, run the strategies, gate, promote; print the table."""
    from fanbu.cycle.tables import print_feedback
    from fanbu.feedback.pipeline import run_feedback

    settings, feedback = recipe.benchmark, recipe.feedback
    data = FeedbackData(**settings.model_dump())  # the default benchmark, the demo's seed and caps
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
