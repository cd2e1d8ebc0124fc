"""SimCSE's unsupervised contrastive objective (https://arxiv.org/abs/2104.08821) for pooled features.

Two forward passes of the same texts with dropout on give two views; each text's first view must pick
its own second view out of the batch (in-batch negatives): cross-entropy over cosine similarities / T.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.train.terms import Batch


def simcse_loss(first: Tensor, second: Tensor, temperature: float = 0.05) -> Tensor:
    """Cross-entropy of row ``i`` of ``first`` against all rows of ``second``, the right answer being row ``i``."""
    if first.shape != second.shape or first.dim() != 2:
        raise ValueError(
            f"two views of equal shape (batch, d) are needed, got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    similarity = F.cosine_similarity(first.unsqueeze(1), second.unsqueeze(0), dim=-1)  # (batch, batch)
    targets = torch.arange(first.shape[0], device=first.device)
    return F.cross_entropy(similarity / temperature, targets)


Embed = Callable[[nn.Module, Batch], Tensor]
"""Pooled features ``(batch, d)`` of a batch, in the model's current (training) mode."""


def encoder_embed(model: nn.Module, batch: Batch) -> Tensor:
    """The mean-pooled embedding of an :class:`~fanbu.models.encoder.EncoderClassifier`, after its dropout."""
    return model.dropout(model.embed(batch.inputs["input_ids"], batch.inputs["attention_mask"]))


class SimCSELoss:
    """A loss term: ``weight * simcse_loss`` of two dropout views of each batch (two extra forward passes).

    Args:
        embed: Maps (model, batch) to pooled features; dropout must be on for the views to differ.
        weight: Multiplier of the term.
        temperature: Softmax temperature (SimCSE uses 0.05).
    """

    name = "simcse"

    def __init__(self, embed: Embed = encoder_embed, weight: float = 1.0, temperature: float = 0.05) -> None:
        self.embed, self.weight, self.temperature = embed, weight, temperature

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if len(batch) < 2:
            return {}  # a single text has no in-batch negative
        first, second = self.embed(model, batch), self.embed(model, batch)  # each (batch, d)
        return {"simcse": self.weight * simcse_loss(first, second, self.temperature)}
