"""Structured pruning of Llama-family causal LM handles: a new, physically smaller model.

Attention is pruned by whole key-value groups (a KV head with the query heads that read it), so the
config stays valid for grouped-query attention; ``head_dim`` is written explicitly because the hidden
width may no longer equal ``heads x head_dim``. Layers are renumbered (each attention's ``layer_idx``,
which the KV cache uses, comes from building the new model); tied embeddings stay tied.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from huggingface_hub.errors import StrictDataclassError
from transformers import PretrainedConfig

from fanbu.derive.prune.checks import check_config
from fanbu.derive.prune.config import Calibration, PruneConfig, PruneError
from fanbu.derive.prune.importance import unit_importance
from fanbu.derive.prune.layout import Layout, llama_layout
from fanbu.derive.prune.plan import Plan, family_indices, make_plan, slice_state
from fanbu.derive.prune.schedule import Targets, round_targets, run_rounds
from fanbu.models.causal_lm import CausalLMHandle

_PER_LAYER_FIELDS = ("layer_types", "no_rope_layers")


def _llama_config(config: PretrainedConfig, plan: Plan, layout: Layout) -> PretrainedConfig:
    new = copy.deepcopy(config)
    first = plan.layers[0]
    groups = len(plan.units[first])
    new.num_hidden_layers = len(plan.layers)
    new.num_attention_heads = groups * layout.group_size
    new.num_key_value_heads = groups
    new.head_dim = layout.head_dim
    new.hidden_size = len(plan.hidden)
    new.intermediate_size = len(plan.ffn[first])
    for name in _PER_LAYER_FIELDS:
        values = getattr(new, name, None)
        if isinstance(values, list) and len(values) == layout.num_layers:
            setattr(new, name, [values[i] for i in plan.layers])
    validate = getattr(new, "validate", None)
    if callable(validate):
        try:
            validate()
        except (StrictDataclassError, ValueError) as exc:  # transformers' strict config checks
            raise PruneError(f"the pruned config is not valid for {type(new).__name__}: {exc}") from None
    return new


def shrink_causal_lm(handle: CausalLMHandle, plan: Plan) -> CausalLMHandle:
    """The smaller handle ``plan`` describes (``plan.vocab`` must be ``None``); ``handle`` is left as it was."""
    old = handle.model
    layout = llama_layout(old)
    state = slice_state(old.state_dict(), layout, family_indices(plan, layout), plan.layers)
    config = _llama_config(old.config, plan, layout)
    reference = next(old.parameters())
    model = type(old)(config).to(device=reference.device, dtype=reference.dtype)
    model.load_state_dict(state)
    if getattr(old, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(old.generation_config)
    model.train(old.training)
    return CausalLMHandle(model, copy.deepcopy(handle.tokenizer), handle.max_length)


def _round(
    handle: CausalLMHandle, targets: Targets, config: PruneConfig, calibration: Calibration | None
) -> CausalLMHandle:
    layout = llama_layout(handle.model)
    importance = None
    if targets.needs_importance(layout):
        importance = unit_importance(handle, config.importance, calibration)
    return shrink_causal_lm(handle, make_plan(layout, targets, importance))


def prune_causal_lm(
    handle: CausalLMHandle,
    config: PruneConfig,
    calibration: Calibration | None = None,
    recover: Callable[[CausalLMHandle, int], None] | None = None,
) -> CausalLMHandle:
    """Prune a Llama-family causal LM handle; returns a new handle (the input is not modified).

    Args:
        handle: The causal LM and its tokenizer.
        config: What to keep (``heads`` counts query heads, a multiple of the KV group size; ``vocab``
            and ``head_dim`` are not supported) and how to score units.
        calibration: Texts for taylor (LM loss) or activation importance.
        recover: Iterative schedule: called as ``recover(handle, round)`` after every round but the last.

    Raises:
        PruneError: the config does not fit the model, or calibration is missing where needed.
    """
    layout = llama_layout(handle.model)
    check_config(handle, config, calibration, layout)
    rounds = round_targets(config, layout)
    return run_rounds(handle, rounds, lambda h, t: _round(h, t, config, calibration), recover)
