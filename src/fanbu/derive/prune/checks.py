"""Does a :class:`PruneConfig` fit a model? Each mismatch is a :class:`PruneError` naming what to set.

Checked before any work: sizes within the model's, whole KV groups for Llama, BERT's rule that the
head size is ``hidden / heads`` (so ``hidden == heads x head_dim`` after pruning), Llama's rule that
``hidden_size % num_attention_heads == 0``, unsupported units, and calibration where it is needed.
"""

from __future__ import annotations

from fanbu.derive.prune.calibrate import Handle, loss_function, require_calibration
from fanbu.derive.prune.config import Calibration, PruneConfig, PruneError
from fanbu.derive.prune.layout import Layout
from fanbu.derive.prune.schedule import final_targets


def check_config(
    handle: Handle, config: PruneConfig, calibration: Calibration | None, layout: Layout
) -> None:
    """Raise :class:`PruneError` when ``config`` cannot be applied to ``handle``'s model."""
    _check_sizes(config, layout)
    if layout.kind == "encoder":
        _check_bert_width(config, layout)
    else:
        _check_llama(config, layout)
    if config.vocab is not None:
        require_calibration(calibration, "vocab trimming (tokens are kept by their frequency)")
    if config.importance != "magnitude" and final_targets(config, layout).needs_importance(layout):
        calibration = require_calibration(calibration, f"importance: {config.importance}")
        if config.importance == "taylor":
            loss_function(handle, calibration)  # raises when an encoder lacks labels or a head


def _check_sizes(config: PruneConfig, layout: Layout) -> None:
    n = layout.num_layers
    if isinstance(config.layers, int) and config.layers > n:
        raise PruneError(f"layers={config.layers}: the model has {n} layers; set layers <= {n}")
    if isinstance(config.layers, list) and max(config.layers) >= n:
        raise PruneError(f"layers={config.layers}: indices run 0..{n - 1} for this {n}-layer model")
    limits = {
        "heads": (config.heads, layout.heads, "attention heads per layer"),
        "head_dim": (config.head_dim, layout.head_dim, "channels per head"),
        "ffn": (config.ffn if isinstance(config.ffn, int) else None, layout.ffn, "FFN neurons per layer"),
        "hidden": (config.hidden, layout.hidden, "hidden channels"),
    }
    for name, (value, limit, what) in limits.items():
        if value is not None and value > limit:
            raise PruneError(f"{name}={value}: the model has {limit} {what}; set {name} <= {limit}")


def _check_bert_width(config: PruneConfig, layout: Layout) -> None:
    heads = config.heads or layout.heads
    head_dim = config.head_dim or layout.head_dim
    hidden = config.hidden or layout.hidden
    if heads * head_dim != hidden:
        product = heads * head_dim
        kept = "" if config.hidden is not None else " (hidden unset, so kept)"
        raise PruneError(
            f"BERT derives the head size as hidden / heads, so after pruning hidden must equal heads x "
            f"head_dim: heads {heads} x head_dim {head_dim} = {product}, but hidden = {hidden}{kept}; "
            f"set hidden: {product}, or choose heads and head_dim whose product is {hidden}"
        )


def _check_llama(config: PruneConfig, layout: Layout) -> None:
    size = layout.group_size
    if config.heads is not None and config.heads % size:
        options = ", ".join(str(size * k) for k in range(1, layout.groups + 1))
        raise PruneError(
            f"heads={config.heads} is not a multiple of the KV group size {size} (num_attention_heads "
            f"{layout.heads} / num_key_value_heads {layout.groups}); whole KV groups are kept so the config "
            f"stays valid: set heads to one of {options}"
        )
    if config.head_dim is not None:
        raise PruneError(
            "head_dim: pruning channels inside heads is not supported for Llama (rotary embeddings fix "
            "each head's width); remove head_dim and prune whole heads instead"
        )
    if config.vocab is not None:
        raise PruneError(
            "vocab trimming is not supported for causal LMs: their byte-level BPE tokenizers build words "
            "from merges, so dropping tokens breaks how text splits; leave vocab unset"
        )
    heads = config.heads or layout.heads
    hidden = config.hidden or layout.hidden
    if hidden % heads:
        below = max(heads, hidden - hidden % heads)
        raise PruneError(
            f"hidden={hidden} is not a multiple of the {heads} heads kept (Llama configs require "
            f"hidden_size % num_attention_heads == 0); set hidden to a multiple of {heads}, e.g. {below}"
        )
