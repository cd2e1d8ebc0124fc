"""Minitron's activation importance for Llama-family causal LMs, with ShortGPT's block influence.

Minitron (Muralidharan et al. 2024, https://arxiv.org/abs/2407.14679) scores each unit by the size of
what it writes on calibration text, not by its weights:

- an FFN neuron by the mean ``|act(x W_gate) * x W_up|`` of that neuron (the input of ``down_proj``);
- a KV group by the mean ``|attention output|`` of its query heads (the input of ``o_proj``), summed
  over the group's channels (Minitron takes the per-head L2 norm; the L1 sum ranks the same dead or
  planted heads and needs no per-token pass);
- a hidden (embedding) channel by the mean ``|LayerNorm(x)|`` feeding each layer's attention and MLP,
  plus the final norm feeding ``lm_head``: this scores the tied embedding's columns too, so the input
  and output embeddings are cut by the same channels and stay tied;
- a layer by ShortGPT's block influence (Men et al. 2024, https://arxiv.org/abs/2403.03853),
  ``1 - cos(layer input, layer output)`` averaged over tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fanbu.derive.prune.calibrate import (
    Handle,
    collect_activations,
    make_batches,
    require_calibration,
    run_forward,
)
from fanbu.derive.prune.config import Calibration, PruneError
from fanbu.derive.prune.layout import Layout
from fanbu.models.causal_lm import CausalLMHandle


@dataclass
class MinitronScores:
    """Minitron's per-unit scores (see :class:`~fanbu.derive.prune.importance.UnitImportance`)."""

    layers: Tensor  # (layers,)
    heads: list[Tensor]  # per layer (kv_groups,)
    ffn: list[Tensor]  # per layer (ffn,)
    hidden_by_layer: Tensor  # (layers, hidden)
    hidden_shared: Tensor  # (hidden,)


def minitron_scores(handle: Handle, calibration: Calibration | None, layout: Layout) -> MinitronScores:
    """Minitron unit scores of a Llama-family handle (see the module docstring); the mode is restored.

    Raises:
        PruneError: the handle is not a Llama-family causal LM, or calibration is missing.
    """
    if layout.kind != "llama" or not isinstance(handle, CausalLMHandle):
        raise PruneError(
            "importance: minitron scores Llama-family causal LMs; use activation, taylor or magnitude for encoders"
        )
    calibration = require_calibration(calibration, "importance: minitron")
    model = handle.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), collect_activations(model, layout) as stats:
            for batch in make_batches(handle, calibration):
                stats.mask = batch["attention_mask"]
                run_forward(handle, calibration, batch)
    finally:
        model.train(was_training)
    means = stats.mean_abs()
    n, groups = layout.num_layers, layout.groups
    heads, ffn = [], []
    hidden_by_layer = torch.zeros(n, layout.hidden)
    for layer in range(n):
        prefix = f"model.layers.{layer}."
        ffn.append(means[prefix + "mlp.down_proj"])  # (ffn,)
        heads.append(means[prefix + "self_attn.o_proj"].view(groups, -1).sum(dim=1))  # (kv_groups,)
        hidden_by_layer[layer] = means[prefix + "self_attn.q_proj"] + means[prefix + "mlp.gate_proj"]
    hidden_shared = means.get("lm_head", torch.zeros(layout.hidden))  # (hidden,)
    return MinitronScores(stats.block_influence(), heads, ffn, hidden_by_layer, hidden_shared)
