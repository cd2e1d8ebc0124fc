"""Mixture-of-experts feed-forward blocks for BERT-family encoders (Branch-Train-MiX style).

Each transformer layer's FFN (``intermediate.dense`` -> activation -> ``output.dense``) becomes a
:class:`MixtureFFN`: a top-k router over several expert FFNs. The mixture replaces ``intermediate``;
``output.dense`` becomes an identity, so ``BertOutput`` still applies its dropout, the residual and its
LayerNorm around the mixture's output. Training them with a load-balancing
loss is :mod:`fanbu.train.balance`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from fanbu.errors import ConfigError


class ExpertFFN(nn.Module):
    """One expert: ``up`` (hidden -> intermediate), activation, ``down`` (intermediate -> hidden)."""

    def __init__(self, hidden: int, intermediate: int, activation: str) -> None:
        super().__init__()
        self.up = nn.Linear(hidden, intermediate)
        self.down = nn.Linear(intermediate, hidden)
        self.act = ACT2FN[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))  # (tokens, hidden)


class MixtureFFN(nn.Module):
    """Routes each token to its top-k experts and mixes their outputs by the renormalised router weights."""

    def __init__(self, hidden: int, intermediate: int, activation: str, num_experts: int, top_k: int) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ConfigError(f"moe: top_k must be in 1..{num_experts} (the number of experts), got {top_k}")
        self.top_k = top_k
        self.router = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(ExpertFFN(hidden, intermediate, activation) for _ in range(num_experts))
        self.router_logits: Tensor | None = None  # (tokens, experts) of the last call, for the balance loss

    def forward(self, hidden_states: Tensor) -> Tensor:
        batch, seq, hidden = hidden_states.shape
        flat = hidden_states.reshape(-1, hidden)  # (tokens, hidden)
        logits = self.router(flat)  # (tokens, experts)
        self.router_logits = logits
        top, chosen = torch.topk(logits, self.top_k, dim=-1)  # (tokens, k) each
        weights = F.softmax(top, dim=-1, dtype=torch.float32).to(flat.dtype)  # (tokens, k)
        out = torch.zeros_like(flat)  # (tokens, hidden)
        for index, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == index)  # tokens routed to this expert, and in which slot
            if token.numel():
                out.index_add_(0, token, weights[token, slot, None] * expert(flat[token]))
        return out.view(batch, seq, hidden)  # (batch, seq, hidden)


def ffn_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers, checked to have BERT's FFN layout."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    ok = layers is not None and all(hasattr(l, "intermediate") and hasattr(l, "output") for l in layers)
    if not ok:
        raise ConfigError(
            f"moe: {type(encoder).__name__} is not a BERT-family encoder (encoder.layer[i].intermediate / "
            ".output); the MoE upcycling supports BERT, RoBERTa and their kin only"
        )
    return layers


def to_moe(
    encoder: nn.Module, sources: Sequence[Mapping[str, Tensor]], top_k: int, seed: int = 0
) -> nn.Module:
    """Turn ``encoder``'s FFNs into mixtures, in place; expert ``e`` of layer ``i`` gets ``sources[e]``'s FFN.

    ``sources`` are plain encoder state dicts (empty dicts leave the experts untouched, for reloading).
    The routers start small and random (seeded).
    """
    config = encoder.config
    generator = torch.Generator().manual_seed(seed)
    for i, layer in enumerate(ffn_layers(encoder)):
        if isinstance(layer.intermediate, MixtureFFN):
            raise ConfigError("moe: the encoder is already a mixture of experts")
        reference = layer.intermediate.dense.weight
        mixture = MixtureFFN(
            config.hidden_size, config.intermediate_size, config.hidden_act, len(sources), top_k
        )
        mixture.to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            mixture.router.weight.copy_(0.02 * torch.randn(mixture.router.weight.shape, generator=generator))
            for expert, state in zip(mixture.experts, sources, strict=True):
                if state:
                    prefix = f"encoder.layer.{i}."
                    expert.up.weight.copy_(state[prefix + "intermediate.dense.weight"])
                    expert.up.bias.copy_(state[prefix + "intermediate.dense.bias"])
                    expert.down.weight.copy_(state[prefix + "output.dense.weight"])
                    expert.down.bias.copy_(state[prefix + "output.dense.bias"])
        layer.intermediate = mixture
        layer.output.dense = nn.Identity()
    return encoder


def is_ffn_key(key: str) -> bool:
    """Whether a plain encoder state-dict key belongs to an FFN dense layer (mixed, not averaged)."""
    return ".intermediate.dense." in key or (".output.dense." in key and ".attention." not in key)


def mixtures(model: nn.Module) -> Iterator[MixtureFFN]:
    """Every mixture block inside ``model`` (a wrapped model works too)."""
    return (m for m in model.modules() if isinstance(m, MixtureFFN))
