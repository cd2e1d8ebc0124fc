"""What weight-space strategies (merge, MoE, graft) share: plain weights, architecture checks, selection.

An expert can be a full fine-tune of the large model or carry an unmerged LoRA adapter (PEFT); either
way :func:`plain_state` gives its encoder weights as a plain Hugging Face state dict (a LoRA update is
merged into a copy). Experts whose own head does worse than the champion on the validation slice are
left out by :func:`select_experts`, so a poisoned expert never reaches the merged weights.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from peft import PeftModel
from pydantic import Field
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, check_experts
from fanbu.feedback.shared.selection import select_experts as choose_experts
from fanbu.models.encoder import EncoderHandle

ARCH_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "hidden_act",
)


class SelectionConfig(Strict):
    """Which experts take part: those whose own head holds up against the champion on validation."""

    enabled: bool = Field(True, description="Leave out experts worse than the champion on validation.")
    tolerance: float = Field(
        0.0, ge=0, le=1, description="Accuracy (a fraction) an expert may trail the champion by and stay in."
    )


def plain_state(handle: EncoderHandle) -> dict[str, Tensor]:
    """The encoder's floating-point weights as a plain state dict (a LoRA adapter merged into a copy)."""
    encoder = handle.model.encoder
    if isinstance(encoder, PeftModel):
        encoder = copy.deepcopy(encoder).merge_and_unload()
    return {k: v.detach() for k, v in encoder.state_dict().items() if v.is_floating_point()}


def check_same_architecture(large: EncoderHandle, experts: dict[str, EncoderHandle], what: str) -> None:
    """Experts must share the large model's architecture and weight shapes, else a ConfigError."""
    if isinstance(large.model.encoder, PeftModel):
        raise ConfigError(f"{what}: the large model carries an unmerged adapter; merge it (merge_lora) first")
    reference = plain_state(large)
    base_config = _base_config(large)
    for name, expert in sorted(experts.items()):
        config = _base_config(expert)
        diff = {f: (getattr(config, f, None), getattr(base_config, f, None)) for f in ARCH_FIELDS}
        diff = {f: pair for f, pair in diff.items() if pair[0] != pair[1]}
        if not diff:
            state = plain_state(expert)
            mismatched = sorted(set(state) ^ set(reference)) or [
                k for k, v in reference.items() if state[k].shape != v.shape
            ]
            if mismatched:
                diff = {"weights": (f"{mismatched[:3]} differ", "")}
        if diff:
            detail = ", ".join(f"{f} {a}" + (f" vs {b}" if b != "" else "") for f, (a, b) in diff.items())
            raise ConfigError(
                f"{what}: expert {name!r} has a different architecture from the large model ({detail}); weight "
                "merging needs experts fine-tuned from the large model (full or LoRA). Feed small models back "
                "with swarm distillation (strategy swarm_distill: logits, or features through projections) or "
                "multitask, or, for students pruned from this champion, with the sub-network transplant "
                "(strategy transplant)"
            )


def _base_config(handle: EncoderHandle) -> Any:
    encoder = handle.model.encoder
    if isinstance(encoder, PeftModel):
        encoder = encoder.get_base_model()
    return encoder.config


def select_experts(ctx: FeedbackContext, config: SelectionConfig) -> tuple[list[str], dict[str, Any]]:
    """The domains whose expert takes part, and a record of why each one is in or out.

    The rule is the one every feedback strategy uses (:func:`fanbu.feedback.shared.selection.select_experts`):
    an expert is left out when its own head's validation accuracy trails the champion's by more than
    ``config.tolerance``; domains without a validation slice are kept (and listed as unchecked).
    """
    selection = choose_experts(ctx, config.tolerance if config.enabled else None)
    details = {
        "selected": list(selection.kept),
        "excluded": dict(selection.excluded),
        "validation": {d: dict(s) for d, s in selection.scores.items()},
        "unchecked": list(selection.unchecked) if config.enabled else [],
    }
    return list(selection.kept), details


def require_selection(selected: list[str], details: dict[str, Any], what: str) -> None:
    """Raise when selection left no expert: there is nothing to feed back."""
    if not selected:
        reasons = "; ".join(f"{d}: {r}" for d, r in details["excluded"].items())
        raise ConfigError(
            f"{what}: every expert was left out by selection ({reasons}); nothing to feed back. Check the "
            "experts, or raise selection.tolerance / set selection.enabled: false"
        )


def same_architecture_swarm(
    ctx: FeedbackContext, selection: SelectionConfig, what: str
) -> tuple[list[str], dict[str, Any]]:
    """Check the swarm shares the champion's architecture, then select its experts (at least one).

    The common start of the weight-space strategies (merge, moe, graft).
    """
    check_experts(ctx, what)
    check_same_architecture(ctx.large, ctx.experts, what)
    selected, details = select_experts(ctx, selection)
    require_selection(selected, details, what)
    return selected, details


def take_heads(candidate: EncoderHandle, experts: dict[str, EncoderHandle], domains: list[str]) -> None:
    """Copy each domain's head from its expert into ``candidate`` (in place; heads are not merged)."""
    for domain in domains:
        source = experts[domain].model.heads[domain].state_dict()
        candidate.model.heads[domain].load_state_dict({k: v.detach().clone() for k, v in source.items()})


def validation_metrics(ctx: FeedbackContext, handle: EncoderHandle, batch_size: int = 64) -> dict[str, float]:
    """The candidate's validation accuracy per feedback domain, and their mean (not a test result)."""
    metrics = {}
    for domain in ctx.domains:
        if domain in ctx.validation and ctx.validation[domain][0]:
            texts, labels = ctx.validation[domain]
            predictions = handle.predict(list(texts), domain, batch_size=batch_size)
            metrics[f"{domain}.val_acc"] = float((predictions == np.asarray(labels)).mean())
    if metrics:
        metrics["val_acc_mean"] = sum(metrics.values()) / len(metrics)
    return metrics
