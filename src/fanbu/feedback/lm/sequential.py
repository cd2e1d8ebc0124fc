"""The naive LM baseline: fine-tune the large LM on the domains one after another.

Each domain's transfer texts in turn, with the next-token loss (``target: text``) or the domain expert's
token distribution (``target: expert``), and no guard against forgetting: what the other methods must
beat. ``train`` applies to each domain's run, so ``train.max_steps`` times the number of domains is the
total; give the other methods that total for a fair comparison.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fanbu.errors import ConfigError
from fanbu.feedback.lm.context import (
    LMFeedbackContext,
    LMStrategyOutput,
    check_lm_context,
    check_same_vocabulary,
    register_lm_method,
)
from fanbu.feedback.lm.distill import MultiTeacherKD
from fanbu.feedback.lm.fit import LMTrainable, fit_lm
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.terms import CausalLMLoss, LossTerm


class LMSequentialSettings(LMTrainable):
    """Settings of ``lm_sequential``: one run per domain, in order."""

    order: list[str] | None = Field(None, description="Domains in training order; null: sorted by name.")
    target: Literal["text", "expert"] = Field(
        "text",
        description="text: the next-token loss on the transfer texts; expert: KL to that domain's expert.",
    )


@register_lm_method(
    "lm_sequential",
    summary="baseline: fine-tune the large LM on each domain's transfer text in turn, no safeguards",
    reference="https://arxiv.org/abs/1612.00796",
    config=LMSequentialSettings,
)
def lm_sequential(ctx: LMFeedbackContext, config: LMSequentialSettings) -> LMStrategyOutput:
    """Fine-tune a copy of the champion on one domain after the other."""
    ctx = check_lm_context(ctx, "lm_sequential")
    order = config.order if config.order is not None else ctx.domains
    if sorted(set(order)) != sorted(order) or not set(order) <= set(ctx.domains):
        raise ConfigError(f"lm_sequential.order {order} must list distinct domains among {ctx.domains}")
    if config.target == "expert":
        check_same_vocabulary(ctx.large, ctx.experts, "lm_sequential")
    model, steps, trained = ctx.large.model, 0, []
    for domain in order:
        texts = ctx.transfer.get(domain, [])
        if not texts:
            continue
        term: LossTerm = CausalLMLoss()
        if config.target == "expert":
            term = MultiTeacherKD(
                {domain: ctx.experts[domain].model}, len(ctx.large.tokenizer), "domain", 1.0, 1.0, 1.0, 0.0
            )
        plan = TextPlan(
            [TaskData(domain, texts)],
            ctx.large.tokenize,
            config.train.batch_size,
            seed=ctx.seed,
            group_by_length=True,
        )
        handle, result = fit_lm(ctx, config, plan, [term], f"lm-sequential {domain}", start=model)
        model, steps = handle.model, steps + result.state.global_step
        trained.append(domain)
    if not trained:
        raise ConfigError("lm_sequential: no domain has transfer texts; nothing to fine-tune on")
    candidate = handle
    metrics = {"steps": float(steps), **ctx.validation_metrics(candidate.model)}
    return LMStrategyOutput(candidate, "finetune", metrics, {"order": trained, "target": config.target})
