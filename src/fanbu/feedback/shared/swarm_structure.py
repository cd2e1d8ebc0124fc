"""What the swarm's pruned students kept and found important, read from their sub-network records.

Every student cut by a prune stage carries a :class:`~fanbu.derive.prune.subnetwork.SubNetwork`: per
tensor the champion's indices it kept, and per pruning round the layers and heads it saw, kept and
scored, all in the champion's numbering. Read across the swarm this says which parts of the large model
the domains use: :func:`swarm_layer_multipliers` turns it into layer-wise learning rates (the
``layer_lr: swarm`` setting of the training strategies), :func:`kept_indices` feeds the
``swarm_structure`` strategy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from peft import PeftModel
from torch import Tensor

from fanbu.derive.prune.layout import Family, Layout, encoder_layout
from fanbu.derive.prune.subnetwork import SubNetwork, architecture_fingerprint, subnetwork_of
from fanbu.errors import ConfigError
from fanbu.models.encoder import EncoderHandle

DERIVE = "derive the experts with a prune stage from this champion"
_LAYER_PREFIX = re.compile(r"^(.*?\.layer\.(\d+)\.)")
_EMBEDDINGS_PREFIX = re.compile(r"^(.*?\.embeddings\.)")
HEADS_PREFIX = "heads."


def swarm_records(
    large: EncoderHandle, experts: Mapping[str, EncoderHandle], what: str, instead: str
) -> dict[str, SubNetwork]:
    """Each expert's record, checked to be cut from a model of the champion's shapes.

    Args:
        large: The champion.
        experts: Domain -> expert.
        what: The strategy or setting that needs the records (starts each error).
        instead: What to do to go without them (ends each error), e.g. ``"set layer_lr: uniform"``.

    Raises:
        ConfigError: an expert has no record, or one cut from a model of other shapes, or the champion
            carries an unmerged adapter.
    """
    if isinstance(large.model.encoder, PeftModel):
        raise ConfigError(f"{what}: the champion carries an unmerged adapter; merge it (merge_lora) first")
    fingerprint = architecture_fingerprint(large.model.state_dict())
    records: dict[str, SubNetwork] = {}
    for domain in sorted(experts):
        record = subnetwork_of(experts[domain])
        if record is None:
            raise ConfigError(
                f"{what}: expert {domain!r} has no recorded sub-network (it was not cut by a prune stage); "
                f"{DERIVE}, or {instead}"
            )
        if record.architecture != fingerprint:
            raise ConfigError(
                f"{what}: expert {domain!r} was pruned from {record.source or 'an unnamed model'}, whose "
                f"tensor shapes differ from the champion's; {DERIVE}, or {instead}"
            )
        records[domain] = record
    return records


def kept_indices(record: SubNetwork, layout: Layout) -> dict[Family, Tensor | None]:
    """Per axis family of the champion (``"vocab"``, ``"hidden"``, ``("ffn", layer)``, ``("qk", layer)``,
    ...), the champion's indices the student kept, ascending (``None``: all); the families of layers it
    dropped are absent."""
    kept: dict[Family, Tensor | None] = {}
    for piece in record.slices.values():
        for dim, family in enumerate(layout.axes(piece.source)):
            if family is not None and family not in kept:
                kept[family] = piece.index[dim]
    return kept


def kept_layers(record: SubNetwork, layout: Layout) -> list[int]:
    """The champion's encoder layers the student kept, ascending."""
    return sorted({family[1] for family in kept_indices(record, layout) if isinstance(family, tuple)})


def layer_importance(record: SubNetwork, layout: Layout) -> Tensor:
    """``(layers,)`` in [0, 1]: how much the student valued each champion layer.

    A dropped layer is 0. A kept layer is its score in the latest round that scored it, over that
    round's highest score; 1 when no round scored it (the student chose its layers explicitly, or pruned
    nothing by importance): keeping it is all the record says.
    """
    kept = kept_layers(record, layout)
    scores = torch.zeros(layout.num_layers)  # (layers,)
    scores[kept] = 1.0
    for scored in record.rounds:  # oldest first: a later round's score replaces an earlier one
        if scored.layer_scores is None or max(scored.layer_scores) <= 0:
            continue
        top = max(scored.layer_scores)
        for layer, score in zip(scored.layers, scored.layer_scores, strict=True):
            if layer in kept:
                scores[layer] = max(score, 0.0) / top
    return scores


def layer_prefixes(large: EncoderHandle, num_layers: int) -> tuple[str, dict[int, str]]:
    """The parameter-name prefixes of the champion's embeddings and of each encoder layer
    (``encoder.embeddings.``, ``encoder.encoder.layer.3.``), read from its real parameter names."""
    embeddings: set[str] = set()
    layers: dict[int, str] = {}
    for name, _ in large.model.named_parameters():
        if match := _LAYER_PREFIX.match(name):
            layers.setdefault(int(match.group(2)), match.group(1))
        elif match := _EMBEDDINGS_PREFIX.match(name):
            embeddings.add(match.group(1))
    if len(embeddings) != 1 or sorted(layers) != list(range(num_layers)):
        raise ConfigError(
            f"layer_lr: swarm needs a BERT-style encoder (embeddings and {num_layers} numbered layers); "
            f"found embeddings {sorted(embeddings)} and layers {sorted(layers)}; set layer_lr: uniform"
        )
    return embeddings.pop(), layers


def swarm_layer_multipliers(
    large: EncoderHandle, experts: Mapping[str, EncoderHandle], floor: float
) -> dict[str, float]:
    """Learning-rate factors per champion layer from what the swarm's students kept and valued.

    Each encoder layer's :func:`layer_importance` is averaged over the students (a layer no student
    kept counts 0), divided by the highest average and mapped linearly onto ``[floor, 1]``: the layers
    the domains rely on most train at the full rate, those none of them kept at ``floor`` times it.
    The embeddings get ``floor`` (every domain shares them), the heads 1. The keys are parameter-name
    prefixes of ``large.model`` (for ``TrainConfig.lr_multipliers``).

    Raises:
        ConfigError: ``floor`` outside (0, 1], no expert, or an expert without a fitting record.
    """
    if not 0 < floor <= 1:
        raise ConfigError(f"layer_lr_floor = {floor}: give a factor in (0, 1]")
    if not experts:
        raise ConfigError("layer_lr: swarm: no expert to read; set layer_lr: uniform")
    records = swarm_records(large, experts, "layer_lr: swarm", "set layer_lr: uniform")
    layout = encoder_layout(large.model)
    values = torch.stack([layer_importance(r, layout) for r in records.values()]).mean(dim=0)  # (layers,)
    values = values / values.max().clamp(min=1e-12)  # (layers,); every student keeps a layer: max > 0
    embeddings, layers = layer_prefixes(large, layout.num_layers)
    multipliers = {embeddings: floor}
    multipliers.update(
        {layers[i]: floor + (1.0 - floor) * float(values[i]) for i in range(layout.num_layers)}
    )
    multipliers[HEADS_PREFIX] = 1.0
    return multipliers
