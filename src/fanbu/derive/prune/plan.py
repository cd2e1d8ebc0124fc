"""What one pruning round keeps (:class:`Plan`), chosen from importance, and the state-dict surgery.

A plan lists, in original indices, the layers kept and per kept layer the attention units (BERT heads
or Llama KV groups), the channels kept inside each head (BERT), the FFN neurons; then the hidden
channels and the vocabulary. :func:`slice_state` turns it into the smaller model's state dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fanbu.derive.prune.importance import UnitImportance
from fanbu.derive.prune.layout import Family, Layout, rename_layer
from fanbu.derive.prune.schedule import Targets


@dataclass
class Plan:
    """Indices kept by one round, all in the current model's numbering, each ascending.

    Attributes:
        layers: Layers kept.
        units: Per kept layer, attention units kept: heads (BERT) or KV groups (Llama).
        qk: BERT, per kept layer: ``(units kept, head_dim kept)`` query/key channels inside each head.
        vo: BERT, per kept layer: ``(units kept, head_dim kept)`` value/output channels inside each head.
        ffn: Per kept layer, FFN neurons kept.
        hidden: Residual-stream channels kept.
        vocab: Token ids kept, or ``None`` to keep the vocabulary.
    """

    layers: list[int]
    units: dict[int, Tensor]
    qk: dict[int, Tensor]
    vo: dict[int, Tensor]
    ffn: dict[int, Tensor]
    hidden: Tensor
    vocab: Tensor | None = None

    @property
    def head_dim(self) -> int | None:
        """Channels kept per head (BERT), ``None`` when the plan does not slice inside heads."""
        first = next(iter(self.qk.values()), None)
        return None if first is None else int(first.shape[1])


def keep_top(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest ``scores``, ascending (ties keep the lower index)."""
    order = torch.argsort(scores.float(), descending=True, stable=True)[:k]
    return order.sort().values


def make_plan(
    layout: Layout, targets: Targets, importance: UnitImportance | None, vocab: Tensor | None = None
) -> Plan:
    """Choose what to keep: the highest-scoring units up to each target (``importance`` may be ``None``
    only when :meth:`Targets.needs_importance` is false)."""
    if importance is None and targets.needs_importance(layout):
        raise ValueError("make_plan: these targets prune by importance; compute unit_importance first")
    layers = _layers(layout, targets, importance)
    units, qk, vo, ffn = {}, {}, {}, {}
    for layer in layers:
        units[layer] = _top_or_all(
            importance.heads[layer] if importance else None, layout.units, targets.units
        )
        if layout.kind == "encoder":
            qk[layer] = _channels(importance, "qk", layer, units[layer], layout.head_dim, targets.head_dim)
            vo[layer] = _channels(importance, "vo", layer, units[layer], layout.head_dim, targets.head_dim)
        ffn[layer] = _top_or_all(importance.ffn[layer] if importance else None, layout.ffn, targets.ffn)
    hidden_scores = importance.hidden(layers) if importance else None
    hidden = _top_or_all(hidden_scores, layout.hidden, targets.hidden)
    return Plan(layers, units, qk, vo, ffn, hidden, vocab)


def _layers(layout: Layout, targets: Targets, importance: UnitImportance | None) -> list[int]:
    if isinstance(targets.layers, tuple):
        return list(targets.layers)
    if targets.layers >= layout.num_layers:
        return list(range(layout.num_layers))
    assert importance is not None
    return keep_top(importance.layers, targets.layers).tolist()


def _top_or_all(scores: Tensor | None, total: int, k: int) -> Tensor:
    if k >= total or scores is None:
        return torch.arange(total)
    return keep_top(scores, k)


def _channels(
    importance: UnitImportance | None, which: str, layer: int, units: Tensor, total: int, k: int
) -> Tensor:
    """``(len(units), k)`` channel indices inside each kept head."""
    if k >= total or importance is None:
        return torch.arange(total).expand(len(units), total).clone()
    scores = (importance.qk_channels if which == "qk" else importance.vo_channels)[layer][units]  # (units, d)
    return torch.stack([keep_top(row, k) for row in scores])


def family_indices(plan: Plan, layout: Layout) -> dict[Family, Tensor]:
    """Flat indices kept along every family axis (per-layer families keyed by original layer)."""
    keep: dict[Family, Tensor] = {"hidden": plan.hidden}
    if plan.vocab is not None:
        keep["vocab"] = plan.vocab
    d = layout.head_dim
    for layer in plan.layers:
        keep[("ffn", layer)] = plan.ffn[layer]
        units = plan.units[layer]
        if layout.kind == "encoder":
            keep[("qk", layer)] = (units[:, None] * d + plan.qk[layer]).flatten()
            keep[("vo", layer)] = (units[:, None] * d + plan.vo[layer]).flatten()
        else:
            size = layout.group_size  # query head h reads KV head h // size (transformers' repeat_kv)
            q_heads = (units[:, None] * size + torch.arange(size)).flatten()
            keep[("q", layer)] = (q_heads[:, None] * d + torch.arange(d)).flatten()
            keep[("kv", layer)] = (units[:, None] * d + torch.arange(d)).flatten()
    return keep


Index = tuple[Tensor | None, ...]  # per dim: the indices kept (None: the whole dim)


def slice_sources(
    state: Mapping[str, Tensor], layout: Layout, keep: Mapping[Family, Tensor], layers: Sequence[int]
) -> dict[str, tuple[str, Index]]:
    """For every tensor of the smaller model: the tensor of ``state`` it is cut from and, per dim, the
    indices kept (kept layers renumbered ``0..n-1``)."""
    position = {old: new for new, old in enumerate(layers)}
    out: dict[str, tuple[str, Index]] = {}
    for name in state:
        layer = layout.layer_of(name)
        if layer is not None and layer not in position:
            continue
        index = tuple(keep.get(family) if family is not None else None for family in layout.axes(name))
        out[name if layer is None else rename_layer(name, position[layer])] = (name, index)
    return out


def slice_state(
    state: Mapping[str, Tensor], layout: Layout, keep: Mapping[Family, Tensor], layers: Sequence[int]
) -> dict[str, Tensor]:
    """The state dict of the smaller model: kept layers renumbered ``0..n-1``, every axis indexed."""
    out: dict[str, Tensor] = {}
    for new, (name, index) in slice_sources(state, layout, keep, layers).items():
        sliced = state[name].detach()
        for dim, kept in enumerate(index):
            if kept is not None:
                sliced = sliced.index_select(dim, kept.to(sliced.device))
        out[new] = sliced
    return out
