"""Mixture of experts, Branch-Train-MiX style: the experts' FFNs behind a learned router.

Every layer's FFN becomes a mixture of the selected experts' FFNs (and the champion's); attention,
embeddings and layer norms are averaged across the same models; domain heads come from the experts,
held-out heads stay the champion's. Then only the routers (optionally also the layer norms and domain
heads) train on the public slices, through the one loop, with the Switch/Mixtral load-balancing loss.
The candidate is a :class:`~fanbu.models.moe.MoEHandle`: it predicts like any encoder handle and
saves / reloads with ``MoEHandle.save`` / ``MoEHandle.load``.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field, model_validator
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, register_strategy
from fanbu.feedback.shared.weights import (
    SelectionConfig,
    plain_state,
    same_architecture_swarm,
    take_heads,
    validation_metrics,
)
from fanbu.models.encoder import EncoderHandle
from fanbu.models.moe import MoEHandle
from fanbu.models.moe_layers import ffn_layers, is_ffn_key, to_moe
from fanbu.train.balance import BalanceLoss, moe_forward
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig
from fanbu.train.loop import TrainResult
from fanbu.train.terms import TaskLoss

CHAMPION = "champion"


class MoEConfig(Strict):
    """How the mixture is built and its router trained."""

    top_k: int = Field(
        2, ge=1, description="Experts each token is routed to (at most the number of experts)."
    )
    include_champion: bool = Field(True, description="The champion's FFN is one of the experts too.")
    balance_weight: float = Field(0.01, ge=0, description="Weight of the load-balancing loss.")
    train_layer_norms: bool = Field(False, description="Also train the (averaged) layer norms.")
    train_domain_heads: bool = Field(False, description="Also train the domain heads taken from the experts.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_ratio=0.0),
        description="Settings of the router training on the public slices.",
    )
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="Which experts take part."
    )

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if (
            self.top_k == 1
            and self.balance_weight == 0
            and not self.train_layer_norms
            and not self.train_domain_heads
        ):
            raise ValueError(
                "top_k 1 with no balance loss leaves the router without a gradient; use top_k >= 2"
            )
        return self


def build_moe(
    large: EncoderHandle, experts: dict[str, EncoderHandle], config: MoEConfig, seed: int = 0
) -> MoEHandle:
    """Upcycle ``large`` into a mixture over ``experts`` (domain -> expert); nothing trained yet."""
    names = ([CHAMPION] if config.include_champion else []) + sorted(experts)
    if config.top_k > len(names):
        raise ConfigError(
            f"moe: top_k {config.top_k} exceeds the {len(names)} experts ({', '.join(names)}); lower top_k"
        )
    ffn_layers(large.model.encoder)
    states = [plain_state(large)] if config.include_champion else []
    states += [plain_state(experts[d]) for d in sorted(experts)]
    shared: dict[str, Tensor] = {
        key: torch.stack([s[key].float() for s in states]).mean(dim=0).to(value.dtype)  # like value
        for key, value in states[0].items()
        if not is_ffn_key(key)
    }
    candidate = copy.deepcopy(large)
    candidate.model.encoder.load_state_dict(shared, strict=False)
    to_moe(candidate.model.encoder, states, config.top_k, seed)
    take_heads(candidate, experts, sorted(experts))
    return MoEHandle(
        candidate.model, candidate.tokenizer, candidate.labels, candidate.max_length, experts=names
    )


def set_trainable(handle: MoEHandle, config: MoEConfig, domains: list[str]) -> list[str]:
    """Freeze everything but the routers (and, if asked, layer norms and domain heads); the names that train."""
    trainable = []
    for name, param in handle.model.named_parameters():
        train = ".router." in name
        train |= config.train_layer_norms and "LayerNorm" in name
        train |= config.train_domain_heads and any(name.startswith(f"heads.{d}.") for d in domains)
        param.requires_grad_(train)
        if train:
            trainable.append(name)
    return trainable


def train_router(
    handle: MoEHandle, ctx: FeedbackContext, config: MoEConfig, domains: list[str]
) -> TrainResult:
    """Train the router (and what ``config`` unfreezes) on the public slices of ``domains``."""
    train = {d: ctx.public[d] for d in domains if d in ctx.public and ctx.public[d][0]}
    if not train:
        raise ConfigError(
            f"moe: no public data for {domains}; the router trains on the domains' public slices"
        )
    validation = {d: ctx.validation[d] for d in domains if d in ctx.validation and ctx.validation[d][0]}
    set_trainable(handle, config, domains)
    settings = config.train.model_copy(update={"seed": ctx.seed})
    return train_heads(
        handle,
        train,
        settings,
        validation or None,
        terms=[TaskLoss(), BalanceLoss(config.balance_weight)],
        description="moe router",
        forward=moe_forward,
    )


@register_strategy(
    "moe",
    summary="Branch-Train-MiX: experts' FFNs become a top-k mixture behind a router trained on public data",
    reference="https://arxiv.org/abs/2403.07816",
    config=MoEConfig,
    capabilities={"same_architecture"},
)
def moe_strategy(ctx: FeedbackContext, config: MoEConfig) -> StrategyOutput:
    """Upcycle the champion into a mixture of the selected experts and train the router."""
    selected, details = same_architecture_swarm(ctx, config.selection, "moe")
    handle = build_moe(ctx.large, {d: ctx.experts[d] for d in selected}, config, ctx.seed)
    result = train_router(handle, ctx, config, ctx.domains)
    for param in handle.model.parameters():
        param.requires_grad_(True)
    details.update(
        {"experts": handle.experts, "top_k": config.top_k, "router_steps": result.state.global_step}
    )
    return StrategyOutput(handle, "moe", validation_metrics(ctx, handle), details)
