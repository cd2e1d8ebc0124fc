"""(a) Merge the domains' LoRA experts into the large LM: task arithmetic, TIES, DARE on the LoRA deltas.

Each expert is the champion with an unmerged PEFT LoRA adapter. Per adapted module, PEFT gives the
adapter's full-rank update (``LoraLayer.get_delta_weight``: ``scaling * B @ A``, the "task vector" of that
module) and PEFT's ``merge_utils`` combines the experts' updates (task arithmetic, TIES, DARE), as the
classifiers' ``merge`` does; the candidate is ``champion + lambda * merged``.

Why not ``add_weighted_adapter``: the candidate is a full model, so the merge can stay at full rank and
be exact. PEFT's ``add_weighted_adapter`` must return a low-rank adapter, so its TIES and DARE either act
on the A and B factors apart (not on the deltas) or truncate the merged delta by SVD. With one expert of
weight 1 and ``lambda = 1``, task arithmetic gives exactly the expert (the test checks the outputs).

``scalings`` lists lambdas to try; the one with the lowest mean validation log-perplexity over the
domains wins (the validation texts, never the gate or test splits).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from pydantic import Field, model_validator
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.lm.context import (
    LMFeedbackContext,
    LMStrategyOutput,
    check_lm_context,
    lora_experts,
    register_lm_method,
)
from fanbu.feedback.strategies.merge import MergeConfig, combine_vectors, seeded_merge
from fanbu.models.causal_lm import CausalLMHandle

LMMethod = Literal["task_arithmetic", "ties", "dare_linear", "dare_ties"]


class LMMergeConfig(Strict):
    """How the LoRA experts' updates are combined into the large LM."""

    method: LMMethod = Field(
        "ties",
        description="task_arithmetic: lambda * weighted sum of the updates; ties: trim each update to "
        "density, elect signs, average the agreeing entries; dare_linear / dare_ties: random drop to density "
        "with rescaling, then a weighted sum / TIES's sign election.",
    )
    weights: dict[str, float] | None = Field(
        None, description="Domain -> weight of its expert's update; default 1.0 for every expert."
    )
    normalize: bool = Field(
        True,
        description="Divide the weights by their sum for task_arithmetic and dare_linear (a mean of the "
        "updates); false: a plain sum (task arithmetic's original form).",
    )
    scalings: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="Lambdas to try; the lowest mean validation log-perplexity over the domains wins.",
    )
    density: float | None = Field(
        None, gt=0, le=1, description="Share of each update kept by ties / dare_*; default 0.5."
    )
    majority_sign: Literal["total", "frequency"] = Field(
        "total", description="TIES sign election: by summed magnitude (total) or by count (frequency)."
    )

    @model_validator(mode="after")
    def _check(self) -> LMMergeConfig:
        if self.density is not None and self.method == "task_arithmetic":
            raise ValueError(
                "density applies to ties, dare_linear and dare_ties, not task_arithmetic; remove it"
            )
        if any(s <= 0 for s in self.scalings):
            raise ValueError(f"scalings must be positive, got {self.scalings}")
        if self.weights is not None and any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be non-negative, got {self.weights}")
        return self

    def combiner(self) -> MergeConfig:
        """The classifiers' merge settings that :func:`combine_vectors` reads (method, density, signs)."""
        return MergeConfig(
            method=self.method,
            normalize=self.normalize,
            density=self.density,
            majority_sign=self.majority_sign,
        )


def lora_deltas(model: PeftModel) -> dict[str, Tensor]:
    """Module name (in the plain base model) -> the active adapter's full update ``scaling * B @ A``."""
    deltas: dict[str, Tensor] = {}
    for name, module in model.get_base_model().named_modules():
        if isinstance(module, LoraLayer):
            update = None
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    delta = module.get_delta_weight(adapter).detach().float()  # (out, in)
                    update = delta if update is None else update + delta
            if update is not None:
                deltas[name] = update
    return deltas


def merge_deltas(
    deltas: list[dict[str, Tensor]], weights: list[float], config: LMMergeConfig, seed: int
) -> dict[str, Tensor]:
    """Module name -> the combined update of the experts (an expert without that module adds zero)."""
    w = torch.tensor(weights, dtype=torch.float32)  # (experts,)
    if config.method in ("task_arithmetic", "dare_linear") and config.normalize:
        if float(w.sum()) <= 0:
            raise ConfigError(f"lm_merge: the weights {weights} sum to zero; give a positive weight")
        w = w / w.sum()
    combiner = config.combiner()
    names = sorted({name for expert in deltas for name in expert})
    merged = {}
    with seeded_merge(seed):
        for name in names:
            shape = next(expert[name].shape for expert in deltas if name in expert)
            vectors = [expert.get(name, torch.zeros(shape)) for expert in deltas]  # each (out, in)
            merged[name] = combine_vectors(vectors, w, combiner)  # (out, in)
    return merged


@torch.no_grad()
def apply_deltas(model: nn.Module, merged: dict[str, Tensor], scaling: float) -> nn.Module:
    """A copy of ``model`` with ``scaling * merged[name]`` added to each named module's weight."""
    candidate = copy.deepcopy(model)
    for name, delta in merged.items():
        try:
            weight = candidate.get_submodule(name).weight
        except AttributeError:
            raise ConfigError(
                f"lm_merge: the large LM has no module {name!r}; the adapters were trained on another model"
            ) from None
        if tuple(weight.shape) != tuple(delta.shape):
            raise ConfigError(
                f"lm_merge: {name}: update {tuple(delta.shape)} does not fit weight {tuple(weight.shape)}"
            )
        weight.add_((scaling * delta).to(weight.dtype))
    return candidate


@register_lm_method(
    "lm_merge",
    summary="Merge the domains' LoRA experts into the large LM: task arithmetic, TIES, DARE on the "
    "full-rank LoRA updates (PEFT), lambda chosen on validation perplexity",
    reference="https://arxiv.org/abs/2306.01708 (TIES); https://arxiv.org/abs/2311.03099 (DARE); "
    "https://arxiv.org/abs/2212.04089 (task arithmetic)",
    config=LMMergeConfig,
    capabilities={"lora_experts"},
)
def lm_merge(ctx: LMFeedbackContext, config: LMMergeConfig) -> LMStrategyOutput:
    """Add the merged LoRA updates of every expert to a copy of the champion."""
    ctx = check_lm_context(ctx, "lm_merge")
    if config.weights is not None:
        unknown = sorted(set(config.weights) - set(ctx.domains))
        if unknown:
            raise ConfigError(f"lm_merge.weights: no expert for {unknown}; experts: {ctx.domains}")
    experts = lora_experts(ctx, ctx.domains, "lm_merge")
    weights = [1.0 if config.weights is None else config.weights.get(d, 1.0) for d in ctx.domains]
    merged = merge_deltas([lora_deltas(experts[d]) for d in ctx.domains], weights, config, ctx.seed)
    tried: dict[float, float] = {}
    best_model, best_score = None, math.inf
    for scaling in config.scalings:
        model = apply_deltas(ctx.large.model, merged, scaling)
        if len(config.scalings) == 1:
            best_model = model
            break
        score = sum(math.log(ctx.validation_ppl(model, d)) for d in ctx.domains) / len(ctx.domains)
        tried[scaling] = score
        if score < best_score:
            best_model, best_score = model, score
    assert best_model is not None  # scalings has at least one entry
    chosen = config.scalings[0] if not tried else min(tried, key=lambda s: tried[s])
    candidate = CausalLMHandle(best_model, ctx.large.tokenizer, ctx.large.max_length)
    details = {
        "method": config.method,
        "weights": dict(zip(ctx.domains, weights, strict=True)),
        "scaling": chosen,
        "val_log_ppl_by_scaling": {str(k): v for k, v in tried.items()},
        "modules": len(merged),
    }
    if config.method != "task_arithmetic":
        details["density"] = config.combiner().kept
    return LMStrategyOutput(candidate, "merge", ctx.validation_metrics(candidate.model), details)
