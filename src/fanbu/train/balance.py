"""The load-balancing loss of mixture-of-experts encoders, as a loss term of the one loop.

The loss is transformers' Mixtral/Switch one, over every mixture's last routing (padding excluded).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from fanbu.errors import ConfigError
from fanbu.models.moe_layers import mixtures
from fanbu.train.terms import Batch


def balance_loss(model: nn.Module, attention_mask: Tensor | None) -> Tensor:
    """Switch/Mixtral load-balancing loss over every mixture's last routing (padding excluded)."""
    blocks = list(mixtures(model))
    logits = tuple(b.router_logits for b in blocks if b.router_logits is not None)
    if not logits:
        raise ConfigError(
            "moe: no routing recorded; run the model forward before asking for the balance loss"
        )
    loss = load_balancing_loss_func(logits, len(blocks[0].experts), blocks[0].top_k, attention_mask)
    return torch.as_tensor(loss)


def moe_forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """The loop's forward for a mixture classifier: logits and the load-balancing loss."""
    logits = model(**batch.inputs, head=batch.task)  # (batch, num_labels)
    return {"logits": logits, "balance": balance_loss(model, batch.inputs.get("attention_mask"))}


class BalanceLoss:
    """Loss term: ``weight * balance`` from :func:`moe_forward`'s outputs."""

    name = "balance"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        return {"balance": self.weight * outputs["balance"]} if self.weight else {}
