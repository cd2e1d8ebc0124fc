"""Shared helpers for the pruning tests: parameter-count formulas and unit planting."""

from __future__ import annotations

import torch
from torch import nn

TEXTS = [
    "the patients were happy with the treatment",
    "computer hardware prices fell again",
    "religion and politics, again and again!",
    "the team won the game at home",
    "doctor said the drug risk is low",
    "space science needs better software",
    "market price of hardware went up",
    "health and disease in the city",
]
LABELS = [0, 1, 2, 0, 1, 2, 1, 0]


def bert_params(
    vocab: int, hidden: int, layers: int, attn: int, ffn: int, positions: int = 64, labels: int = 3
) -> int:
    """Parameters of EncoderHandle.tiny (types=2, pooler) plus one head of ``labels`` classes."""
    embeddings = vocab * hidden + positions * hidden + 2 * hidden + 2 * hidden
    attention = 3 * (hidden * attn + attn) + attn * hidden + hidden + 2 * hidden
    feed_forward = hidden * ffn + ffn + ffn * hidden + hidden + 2 * hidden
    pooler = hidden * hidden + hidden
    head = labels * hidden + labels
    return embeddings + layers * (attention + feed_forward) + pooler + head


def llama_params(
    vocab: int, hidden: int, layers: int, heads: int, groups: int, head_dim: int, ffn: int
) -> int:
    """Parameters of a tied-embedding Llama without biases."""
    attention = hidden * heads * head_dim + 2 * hidden * groups * head_dim + heads * head_dim * hidden
    feed_forward = 3 * hidden * ffn
    return vocab * hidden + layers * (attention + feed_forward + 2 * hidden) + hidden


def bert_layer(model: nn.Module, index: int) -> nn.Module:
    return model.encoder.encoder.layer[index]


@torch.no_grad()
def scale_bert_head(model: nn.Module, layer: int, head: int, factor: float, head_dim: int) -> None:
    """Multiply one BERT head's q/k/v rows and output-projection columns by ``factor`` (0 removes it)."""
    block = bert_layer(model, layer).attention
    rows = slice(head * head_dim, (head + 1) * head_dim)
    for linear in (block.self.query, block.self.key, block.self.value):
        linear.weight[rows] *= factor
        linear.bias[rows] *= factor
    block.output.dense.weight[:, rows] *= factor


@torch.no_grad()
def scale_bert_neuron(model: nn.Module, layer: int, neuron: int, factor: float) -> None:
    """Multiply one FFN neuron's input row (and bias) and output column by ``factor``."""
    block = bert_layer(model, layer)
    block.intermediate.dense.weight[neuron] *= factor
    block.intermediate.dense.bias[neuron] *= factor
    block.output.dense.weight[:, neuron] *= factor


@torch.no_grad()
def zero_hidden_channel(model: nn.Module, channel: int) -> None:
    """Zero every weight that reads or writes one hidden channel of a tiny BERT (and its heads)."""
    readers = ("query", "key", "value", "intermediate.dense", "pooler.dense", "heads.")
    writers = ("output.dense", "pooler.dense")
    for name, param in model.named_parameters():
        if "embeddings" in name and "LayerNorm" not in name:
            param[:, channel] = 0
        elif "LayerNorm" in name:
            param[channel] = 0
        elif name.endswith("weight"):
            if any(r in name for r in readers):
                param[:, channel] = 0
            if any(w in name for w in writers):
                param[channel] = 0
        elif any(w in name for w in writers):
            param[channel] = 0


@torch.no_grad()
def scale_llama_group(model: nn.Module, layer: int, group: int, factor: float) -> None:
    """Multiply one KV group (its k/v heads, the query heads reading them, their o columns)."""
    attn = model.model.layers[layer].self_attn
    config = model.config
    d = config.head_dim
    size = config.num_attention_heads // config.num_key_value_heads
    kv = slice(group * d, (group + 1) * d)
    q = slice(group * size * d, (group + 1) * size * d)
    attn.k_proj.weight[kv] *= factor
    attn.v_proj.weight[kv] *= factor
    attn.q_proj.weight[q] *= factor
    attn.o_proj.weight[:, q] *= factor


@torch.no_grad()
def scale_llama_neuron(model: nn.Module, layer: int, neuron: int, factor: float) -> None:
    mlp = model.model.layers[layer].mlp
    mlp.gate_proj.weight[neuron] *= factor
    mlp.up_proj.weight[neuron] *= factor
    mlp.down_proj.weight[:, neuron] *= factor
