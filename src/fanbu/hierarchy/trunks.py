"""Trunks the adapter stack sits on: a whole encoder, the top layers of a frozen one, or a neck on its features.

A trunk maps keyword tensors to pooled features ``(batch, hidden)``. :class:`MeanPooled` runs a whole
Hugging Face encoder; :class:`BertTail` runs only the top layers of a BERT-style encoder on hidden states
cached below them (:func:`cache_hidden`); :class:`FeatureNeck` is a frozen residual MLP on the pooled
features of a frozen encoder (cached once), whose two projections carry the adapters: bottleneck
adapters on the features, the cheapest way to train many adapters on a CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from fanbu.errors import ModelError
from fanbu.models.encoder import EncoderHandle


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Masked mean over the sequence: ``(batch, seq, hidden)`` -> ``(batch, hidden)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (batch, hidden)


class MeanPooled(nn.Module):
    """A whole encoder, mean pooled: ``(input_ids, attention_mask)`` -> ``(batch, hidden)``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.hidden_size = int(encoder.config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)  # (batch, hidden)


def _layers(encoder: nn.Module) -> nn.ModuleList:
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise ModelError(
            f"{type(encoder).__name__} has no BERT-style encoder.layer; use a BERT-family trunk or set "
            "tail_layers: null to adapt the whole encoder"
        )
    return stack


class BertTail(nn.Module):
    """The top ``layers`` layers of a BERT-style encoder (a copy), on hidden states cached below them.

    Input: ``hidden_states`` ``(batch, seq, hidden)`` from :func:`cache_hidden` and ``attention_mask``
    ``(batch, seq)``; output: mean-pooled features ``(batch, hidden)``.
    """

    def __init__(self, encoder: nn.Module, layers: int) -> None:
        super().__init__()
        stack = _layers(encoder)
        if not 1 <= layers <= len(stack):
            raise ModelError(f"tail_layers {layers} is outside 1..{len(stack)} (the encoder's layers)")
        self.config = encoder.config
        self.hidden_size = int(encoder.config.hidden_size)
        self.layer = nn.ModuleList(copy.deepcopy(list(stack[len(stack) - layers :])))

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        hidden = hidden_states  # (batch, seq, hidden)
        for layer in self.layer:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return mean_pool(hidden, attention_mask)  # (batch, hidden)


@torch.no_grad()
def cache_hidden(
    handle: EncoderHandle, texts: Sequence[str], tail_layers: int, batch_size: int = 32
) -> dict[str, Tensor]:
    """Hidden states below the top ``tail_layers`` layers, padded to the handle's ``max_length``.

    Returns ``hidden_states`` ``(n, max_length, hidden)`` and ``attention_mask`` ``(n, max_length)``.
    """
    encoder = handle.model.encoder
    below = len(_layers(encoder)) - tail_layers
    encoder.eval()
    states, masks = [], []
    for start in range(0, len(texts), batch_size):
        inputs = handle.tokenize(list(texts[start : start + batch_size]))
        out = encoder(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[below]  # (batch, seq, hidden): input of the first tail layer
        pad = handle.max_length - hidden.shape[1]
        states.append(nn.functional.pad(hidden, (0, 0, 0, pad)))
        masks.append(nn.functional.pad(inputs["attention_mask"], (0, pad)))
    return {"hidden_states": torch.cat(states), "attention_mask": torch.cat(masks)}


class FeatureNeck(nn.Module):
    """``features + up(gelu(down(norm(features))))`` on cached pooled features ``(batch, hidden)``.

    ``down`` is a seeded random projection and ``up`` is zero, both frozen, so the plain neck is the
    identity; LoRA on ``down`` and ``up`` makes each node's adapter a bottleneck adapter whose deltas add
    up along a path like any other LoRA.
    """

    def __init__(self, hidden_size: int, width: int = 512, seed: int = 0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.norm = nn.LayerNorm(hidden_size)
            self.down = nn.Linear(hidden_size, width)
            self.up = nn.Linear(width, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, features: Tensor) -> Tensor:
        inner = nn.functional.gelu(self.down(self.norm(features)))  # (batch, width)
        return features + self.up(inner)  # (batch, hidden)
