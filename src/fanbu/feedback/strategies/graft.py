"""Module reuse: graft chosen encoder layers of an expert (or of its LoRA adapter) into a copy of the large model.

A grafted layer is copied whole (``layer``), or only its attention block or its feed-forward block
(``ffn``: intermediate and output dense with the output LayerNorm). A LoRA expert contributes its merged
update on those layers only. Without an explicit choice each expert gives the layers its fine-tuning
moved most (relative weight change), no layer taken twice.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, register_strategy
from fanbu.feedback.shared.weights import (
    SelectionConfig,
    check_same_architecture,
    plain_state,
    same_architecture_swarm,
    take_heads,
    validation_metrics,
)
from fanbu.models.encoder import EncoderHandle

Part = Literal["layer", "attention", "ffn"]
PART_PREFIXES: dict[str, tuple[str, ...]] = {
    "layer": ("",),
    "attention": ("attention.",),
    "ffn": ("intermediate.", "output."),
}


class GraftConfig(Strict):
    """Which expert layers go into the candidate."""

    layers: dict[str, list[int]] | None = Field(
        None, description="Domain -> encoder layer indices taken from its expert; null: choose automatically."
    )
    auto_layers: int = Field(1, ge=1, description="Layers per expert when choosing automatically.")
    part: Part = Field("layer", description="Graft whole layers, only attention, or only the FFN block.")
    heads: bool = Field(True, description="Take each grafted expert's domain head too.")
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="Which experts take part."
    )


def layer_keys(state: dict[str, Tensor], layer: int, part: Part) -> list[str]:
    """The state-dict keys of ``part`` of encoder layer ``layer``."""
    prefixes = tuple(f"encoder.layer.{layer}.{p}" for p in PART_PREFIXES[part])
    return [k for k in state if k.startswith(prefixes)]


def num_layers(handle: EncoderHandle) -> int:
    """How many transformer layers the encoder has."""
    return int(handle.model.encoder.config.num_hidden_layers)


def graft_layers(
    large: EncoderHandle, expert: EncoderHandle, layers: list[int], part: Part = "layer"
) -> EncoderHandle:
    """A copy of ``large`` whose ``layers`` (their ``part``) carry ``expert``'s weights; heads untouched."""
    total = num_layers(large)
    bad = [i for i in layers if not 0 <= i < total]
    if bad:
        raise ConfigError(f"graft: layers {bad} do not exist; the encoder has layers 0..{total - 1}")
    check_same_architecture(large, {"expert": expert}, "graft")
    source = plain_state(expert)
    update = {k: source[k].clone() for i in layers for k in layer_keys(source, i, part)}
    candidate = copy.deepcopy(large)
    _, unexpected = candidate.model.encoder.load_state_dict(update, strict=False)
    if unexpected:
        raise ConfigError(f"graft: keys {unexpected[:3]} do not fit the large model")
    return candidate


def layer_change(large: EncoderHandle, expert: EncoderHandle, part: Part = "layer") -> list[float]:
    """Per layer, ``||expert - large|| / ||large||`` over the grafted part's weights."""
    base, tuned = plain_state(large), plain_state(expert)
    changes = []
    for i in range(num_layers(large)):
        keys = layer_keys(base, i, part)
        diff = torch.sqrt(sum(((tuned[k] - base[k]).float() ** 2).sum() for k in keys))
        norm = torch.sqrt(sum((base[k].float() ** 2).sum() for k in keys))
        changes.append(float(diff / norm.clamp(min=1e-12)))
    return changes


def choose_layers(ctx: FeedbackContext, domains: list[str], config: GraftConfig) -> dict[str, list[int]]:
    """Greedy: each expert takes its most-changed layers not already taken (largest change first)."""
    wishes = sorted(
        (
            (change, d, i)
            for d in domains
            for i, change in enumerate(layer_change(ctx.large, ctx.experts[d], config.part))
        ),
        reverse=True,
    )
    chosen: dict[str, list[int]] = {d: [] for d in domains}
    taken: set[int] = set()
    for _, domain, layer in wishes:
        if layer not in taken and len(chosen[domain]) < config.auto_layers:
            chosen[domain].append(layer)
            taken.add(layer)
    return {d: sorted(v) for d, v in chosen.items() if v}


def _check_plan(plan: dict[str, list[int]], domains: list[str]) -> None:
    unknown = sorted(set(plan) - set(domains))
    if unknown:
        raise ConfigError(f"graft.layers: no (selected) expert for {unknown}; experts: {domains}")
    seen: dict[int, str] = {}
    for domain, layers in plan.items():
        for layer in layers:
            if layer in seen:
                raise ConfigError(
                    f"graft.layers: layer {layer} is asked of both {seen[layer]!r} and {domain!r}"
                )
            seen[layer] = domain


@register_strategy(
    "graft",
    summary="Module reuse: graft an expert's most-changed (or chosen) layers, or its LoRA adapter on them, "
    "into the large model",
    reference="https://arxiv.org/abs/2403.07816 (Branch-Train-MiX; module reuse)",
    config=GraftConfig,
    capabilities={"same_architecture"},
)
def graft_strategy(ctx: FeedbackContext, config: GraftConfig) -> StrategyOutput:
    """Copy the chosen layers of each selected expert into a copy of the champion."""
    selected, details = same_architecture_swarm(ctx, config.selection, "graft")
    if config.layers is not None:
        _check_plan(config.layers, ctx.domains)
    plan = (
        {d: v for d, v in config.layers.items() if d in selected}
        if config.layers is not None
        else choose_layers(ctx, selected, config)
    )
    if not plan:
        raise ConfigError("graft: no layer to graft; set graft.layers for a selected expert")
    candidate = ctx.large
    for domain, layers in plan.items():
        candidate = graft_layers(candidate, ctx.experts[domain], layers, config.part)
    if config.heads:
        take_heads(candidate, ctx.experts, sorted(plan))
    details.update({"layers": plan, "part": config.part})
    return StrategyOutput(candidate, "merge", validation_metrics(ctx, candidate), details)
