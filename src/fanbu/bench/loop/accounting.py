"""What each mechanism moves from the domains to the centre, in bytes (the rules are in :mod:`fanbu.bench.loop`).

A mechanism's ``bytes_from_domains`` is the sum of its parts: ``logits`` (fp32, per soft-labelled
transfer text and class of the head the domain teaches), ``features`` (fp32 pooled states, when feature
matching is on), ``importances`` (fp32, one per champion layer per student, for ``layer_lr: swarm``),
``weights`` (every fp32 parameter of each domain's model: transplant's students, the full-size experts),
``indices`` (int32, each unit a student kept on the axes swarm_structure cuts) and ``collected`` (the
collected dataset as stored: UTF-8 texts and an int32 label per labelled row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from fanbu.collect.dataset import read_collected
from fanbu.derive.prune.layout import encoder_layout
from fanbu.derive.prune.subnetwork import subnetwork_of
from fanbu.evaluate.speed import param_count
from fanbu.feedback.shared.context import FeedbackContext
from fanbu.feedback.shared.swarm_structure import kept_indices
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import Registry

FLOAT = 4  # bytes of an fp32 number
INDEX = 4  # bytes of an int32 index or label


def collected_bytes(registry: Registry, dataset: str) -> int:
    """The collected dataset's bytes: its texts in UTF-8 and an int32 label per labelled row."""
    data = read_collected(registry, dataset)
    labelled = sum(len(t.encode("utf-8")) + INDEX for texts, _ in data.labeled.values() for t in texts)
    return labelled + sum(len(t.encode("utf-8")) for texts in data.unlabeled.values() for t in texts)


def weight_bytes(models: Mapping[str, EncoderHandle]) -> int:
    """Every fp32 parameter of each model (a shared parameter once)."""
    return FLOAT * sum(param_count(handle.model) for handle in models.values())


def _teacher_bytes(config: Any, details: Mapping[str, Any], ctx: FeedbackContext) -> dict[str, int]:
    parts: dict[str, int] = {}
    targets: Mapping[str, Mapping[str, float]] = details.get("targets") or {}
    if getattr(config, "alpha", 1.0) > 0:  # alpha 0: the teachers' term is off, nothing is sent
        parts["logits"] = FLOAT * sum(
            int(stats["soft"]) * len(ctx.large.labels[head]) for head, stats in targets.items()
        )
    if getattr(config, "feature_weight", 0.0) > 0:  # by domain: each head's own expert sends its states
        parts["features"] = FLOAT * sum(
            int(stats["soft"]) * ctx.experts[head].model.hidden_size
            for head, stats in targets.items()
            if head in ctx.experts
        )
    if getattr(config, "layer_lr", "uniform") == "swarm":
        layers = encoder_layout(ctx.large.model).num_layers
        parts["importances"] = FLOAT * layers * len(ctx.experts)
    return parts


def _kept_units(ctx: FeedbackContext, axes: list[str]) -> int:
    layout = encoder_layout(ctx.large.model)
    total = 0
    for expert in ctx.experts.values():
        record = subnetwork_of(expert)
        if record is None:
            continue
        for family, index in kept_indices(record, layout).items():
            axis = family if isinstance(family, str) else family[0]
            if axis not in axes:
                continue
            full = layout.vocab if axis == "vocab" else layout.ffn
            total += full if index is None else int(index.numel())
    return total


def mechanism_bytes(
    strategy: str, config: BaseModel, details: Mapping[str, Any], ctx: FeedbackContext, collected: int | None
) -> dict[str, int]:
    """The parts a mechanism moves (see the module docstring) and their ``total``.

    Args:
        strategy: The registered feedback strategy that ran.
        config: Its validated settings.
        details: Its :attr:`~fanbu.feedback.shared.context.StrategyOutput.details`.
        ctx: The context it ran on (the champion and the experts).
        collected: The collected dataset's bytes when the context carried it, else ``None``.
    """
    parts: dict[str, int] = {}
    if strategy == "transplant":
        parts["weights"] = weight_bytes(ctx.experts)
    elif strategy == "swarm_structure":
        parts["indices"] = INDEX * _kept_units(ctx, list(getattr(config, "axes", [])))
    elif "targets" in details:  # a strategy that learns from the teachers' outputs
        parts.update(_teacher_bytes(config, details, ctx))
    else:  # any other strategy reads the experts' weights
        parts["weights"] = weight_bytes(ctx.experts)
    if collected is not None:
        parts["collected"] = collected
    return {**parts, "total": sum(parts.values())}
