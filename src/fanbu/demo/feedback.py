"""The demo's feedback step: the swarm feeds back into large v0, behind the gate.

By default the swarm is **the small models the demo has just derived** (``feedback.swarm: small``):
反哺 from the models that serve the domains. Each small model learnt its domain's private slice, which
large v0 never saw, so on some domains it knows more than v0 (see the demo's small-model table), and
those are the domains it can teach; the strategy leaves out a small model that does worse than v0 on
its validation slice. The teachers are the small models' **fp32 twins**, saved beside each int8
deployment: soft labels want the probabilities the int8 graph approximates, and the fp32 twin is the
model the small model's future versions are trained from (its int8 graph agrees with it on almost every
text, see the derive bench).

``feedback.swarm: finetune`` swaps in full-size experts (large v0 fine-tuned on each private slice),
the design the feedback bench compares against: more capacity, but a full training per domain.

The default strategy is ``swarm_distill`` with each domain's head taught by its own model
(``by_domain``) on the public slices, with LwF distilling v0 on every head so the held-out tasks
(BBC News, Reuters R8) are protected: one short training run. The gate then promotes the candidate
(large v1) or rejects it. Those defaults are :class:`~fanbu.demo.recipe.DemoFeedback`'s.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fanbu.demo.recipe import DemoRecipe
from fanbu.errors import ConfigError
from fanbu.feedback.recipe import ExpertsConfig, FeedbackData, FeedbackRecipe
from fanbu.registry import Registry


def feed_back(
    recipe: DemoRecipe, registry: Registry, champion: str, console: Console, small: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the strategies on the swarm, gate, promote; print the table.

    ``small`` (domain -> model id) is the small-model swarm the demo derived; it is required when
    ``feedback.swarm`` is ``small``.
    """
    from fanbu.cycle.tables import print_feedback
    from fanbu.feedback.pipeline import run_feedback

    settings, feedback = recipe.benchmark, recipe.feedback
    data = FeedbackData(**settings.model_dump())  # the default benchmark, the demo's seed and caps
    if feedback.swarm == "small":
        if not small:
            raise ConfigError(
                "feedback.swarm is 'small' but no small models were derived; enable derive, or set "
                "feedback.swarm: finetune"
            )
        experts = ExpertsConfig(source="registry", models=dict(small))
        what = "the small models, their fp32 twins"
    else:
        experts = ExpertsConfig(source="derive", derive=feedback.experts)
        what = "full-size fine-tunes of the champion on the private slices"
    step = FeedbackRecipe(
        champion=champion,
        max_length=recipe.max_length,
        data=data,
        experts=experts,
        strategies=feedback.strategies,
        gate=feedback.gate,
        seed=settings.seed,
    )
    console.print(f"[bold]Feeding the swarm back into {champion}[/] (swarm: {what})")
    summary = run_feedback(step, registry)
    print_feedback(
        console, summary, title=f"candidates from {champion}, gated on every domain and held-out task"
    )
    return summary
