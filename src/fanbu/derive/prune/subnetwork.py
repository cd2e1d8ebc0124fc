"""Where a pruned student sits inside the large model it was cut from: :class:`SubNetwork`.

Every tensor of an encoder student (encoder and heads) is ``scale * large[source][index]``: per dim, the
large model's indices kept (``None``: the whole dim), then the factors the pruner applied (BERT's
queries get ``sqrt(d_new / d_old)`` when heads narrow). :func:`record_shrink`, called by
:func:`~fanbu.derive.prune.encoder.shrink_encoder`, composes the cut with the record the handle already
carries, so after any number of rounds or prune stages the indices are in the ORIGINAL large model's
coordinates. The record keeps the student's start (its weights as cut from the original), so a
transplant sees everything the student learned since, recovery and distillation between cuts included.
It also keeps, per pruning round, the layers and heads that round saw and kept and, when it pruned by
importance, their scores (:class:`RoundScores`, added by :func:`record_round`), all in the original's
numbering: what the swarm found important, read back by feedback (layer-wise learning rates).

The handle carries the record as a :class:`~fanbu.models.encoder.Sidecar` (``handle.subnetwork``) that
its ``save`` writes beside the weights: ``subnetwork.json`` (metadata) and ``subnetwork.safetensors``
(int64 indices, start weights), so it travels with every later save of the same student (distill,
finetune, the fp32 handle inside a quantize deployment; not an unmerged LoRA adapter, whose loader
builds a new handle). Never pickle.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fanbu.derive.prune.importance import UnitImportance
from fanbu.derive.prune.plan import Index, Plan
from fanbu.errors import ModelError
from fanbu.io import sha256_json
from fanbu.models.encoder import EncoderHandle, Sidecar, read_sidecar

FORMAT = 1
HEADS = "heads."


def _cut(tensor: Tensor, index: Index, factor: float | None = None) -> Tensor:
    """``tensor`` indexed dim by dim (as ``slice_state`` does), times ``factor``; never a view of it."""
    out = tensor.detach()
    for dim, kept in enumerate(index):
        if kept is not None:
            out = out.index_select(dim, kept.to(out.device))
    if factor is not None:
        out = out * factor
    return out.clone() if out.data_ptr() == tensor.data_ptr() else out


def _compose(outer: Tensor | None, inner: Tensor | None, size: int) -> Tensor | None:
    """Indices into an original dim of ``size`` when ``inner`` indexes the dim ``outer`` cut out of it."""
    if inner is None:
        return outer
    index = inner.cpu().long() if outer is None else outer[inner.cpu().long()]
    return None if torch.equal(index, torch.arange(size)) else index.clone()


@dataclass
class Slice:
    """Where one student tensor comes from: ``large[source]`` indexed by ``index``, times ``scale``.

    Attributes:
        source: The large model's tensor (its name in ``handle.model.state_dict()``).
        shape: That tensor's shape in the large model.
        index: Per dim, the large model's indices kept, int64 ascending (``None``: the whole dim).
        scale: Factors applied after indexing, in order (empty: none).
    """

    source: str
    shape: tuple[int, ...]
    index: Index
    scale: tuple[float, ...] = ()

    @property
    def factor(self) -> float:
        """The product of :attr:`scale` (1.0 when unscaled)."""
        return math.prod(self.scale)

    def take(self, large: Tensor) -> Tensor:
        """The student tensor as cut from ``large``: bit for bit what the pruner made."""
        out = _cut(large, self.index)
        for factor in self.scale:
            out = out * factor
        return out

    def place(self, values: Tensor) -> Tensor:
        """``values`` (the student's shape) at their coordinates in zeros of :attr:`shape`: an index_put over
        the cartesian product of the per-dim indices, done one dim at a time."""
        out = values.detach().clone()
        for dim, kept in enumerate(self.index):
            if kept is not None:
                shape = list(out.shape)
                shape[dim] = self.shape[dim]
                out = out.new_zeros(shape).index_copy_(dim, kept.to(out.device), out)
        return out  # (*self.shape)


@dataclass
class RoundScores:
    """What one pruning round saw, kept and scored, in the ORIGINAL large model's numbering.

    Attributes:
        method: The importance scorer, or ``None`` when the round chose nothing by importance (explicit
            layers, vocabulary only): then only what it kept is recorded.
        layers: The layers of the round's input model.
        heads: Per input layer, its heads.
        kept_layers: The layers the round kept.
        kept_heads: Per kept layer, the heads kept.
        layer_scores: Per input layer, its importance (``None`` without a scorer).
        head_scores: Per input layer, per head, its importance (``None`` without a scorer).
    """

    method: str | None
    layers: list[int]
    heads: list[list[int]]
    kept_layers: list[int]
    kept_heads: list[list[int]]
    layer_scores: list[float] | None = None
    head_scores: list[list[float]] | None = None


@dataclass
class SubNetwork:
    """A pruned student's record: where each of its tensors sits in the large model, and its start.

    Attributes:
        slices: Student tensor name -> its :class:`Slice` of the large model.
        start: Student tensor name -> its weights as cut (``slices[name].take(large[source])``).
        architecture: :func:`architecture_fingerprint` of the large model.
        weights: :func:`weights_fingerprint` of the large model when it was cut.
        source: The large model's registry name (``large:v0``), when it had one.
        rounds: Each pruning round's :class:`RoundScores`, oldest first (empty for a record written
            before rounds were recorded).
    """

    slices: dict[str, Slice]
    start: dict[str, Tensor]
    architecture: str
    weights: str
    source: str | None = None
    rounds: list[RoundScores] = field(default_factory=list)

    def take(self, large: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The student's state as the record cuts it from ``large`` (a ``handle.model`` state dict)."""
        return {name: piece.take(large[piece.source]) for name, piece in self.slices.items()}

    def to_sidecar(self) -> Sidecar:
        """The record as a handle saves it: JSON metadata, int64 indices and start weights."""
        tensors: dict[str, Tensor] = {}
        entries: dict[str, Any] = {}
        for name, piece in self.slices.items():
            indexed = [dim for dim, kept in enumerate(piece.index) if kept is not None]
            for dim in indexed:
                tensors[f"index:{name}:{dim}"] = piece.index[dim].long().clone()  # type: ignore[union-attr]
            tensors[f"start:{name}"] = self.start[name]
            entries[name] = {
                "source": piece.source,
                "shape": list(piece.shape),
                "scale": list(piece.scale),
                "indexed": indexed,
            }
        meta: dict[str, Any] = {"format": FORMAT, "source": self.source, "architecture": self.architecture}
        meta.update({"weights": self.weights, "tensors": entries})
        meta["rounds"] = [asdict(r) for r in self.rounds]
        return Sidecar(meta, tensors)

    @classmethod
    def from_sidecar(cls, sidecar: Sidecar, where: str) -> SubNetwork:
        """Read a record back (``where`` names it in errors).

        Raises:
            ModelError: the record is damaged or of another format.
        """
        meta, tensors = sidecar.meta, sidecar.tensors
        try:
            if meta["format"] != FORMAT:
                raise ValueError(f"format {meta['format']}, expected {FORMAT}")
            slices, start = {}, {}
            for name, entry in meta["tensors"].items():
                shape = tuple(int(n) for n in entry["shape"])
                indexed = set(entry["indexed"])
                index = tuple(
                    tensors[f"index:{name}:{d}"] if d in indexed else None for d in range(len(shape))
                )
                slices[name] = Slice(entry["source"], shape, index, tuple(float(f) for f in entry["scale"]))
                start[name] = tensors[f"start:{name}"]
            rounds = [RoundScores(**r) for r in meta.get("rounds", [])]
            return cls(slices, start, str(meta["architecture"]), str(meta["weights"]), meta["source"], rounds)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{where}: the sub-network record is damaged ({exc!r}); derive the student again with a prune stage"
            ) from None


def architecture_fingerprint(state: Mapping[str, Tensor]) -> str:
    """sha256 of the encoder tensors' names and shapes (heads left out: a champion gains heads)."""
    return sha256_json(sorted([k, list(v.shape)] for k, v in state.items() if not k.startswith(HEADS)))


def weights_fingerprint(state: Mapping[str, Tensor]) -> str:
    """sha256 of the encoder tensors' names, dtypes and bytes (heads left out)."""
    digest = hashlib.sha256()
    for name in sorted(k for k in state if not k.startswith(HEADS)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def subnetwork_of(handle: EncoderHandle) -> SubNetwork | None:
    """The record ``handle`` carries, or ``None`` when it was not cut from a larger model."""
    sidecar = handle.subnetwork
    return None if sidecar is None else SubNetwork.from_sidecar(sidecar, "the handle")


def load_subnetwork(model_dir: str | Path) -> SubNetwork | None:
    """The record saved in a model directory, or ``None`` when it has none."""
    sidecar = read_sidecar(Path(model_dir))
    return None if sidecar is None else SubNetwork.from_sidecar(sidecar, str(model_dir))


def record_shrink(
    large: EncoderHandle,
    sources: Mapping[str, tuple[str, Index]],
    scales: Mapping[str, float],
    state: Mapping[str, Tensor],
) -> SubNetwork:
    """The record of the student ``shrink_encoder`` cut from ``large``, in the original's coordinates.

    A ``large`` that carries a record of its own (an iterative round, a second prune stage) has its
    indices composed and its start cut alike; tensors it gained after its own cut (a new head) have no
    place in the original and are left out.

    Args:
        large: The handle that was cut.
        sources: Student tensor -> (tensor of ``large``, per-dim indices), from ``slice_sources``.
        scales: Student tensor -> the factor the cut applied.
        state: The student's weights as cut (every key of ``sources``).
    """
    previous = subnetwork_of(large)
    if previous is None:  # the identity record of ``large`` itself: its start is its weights
        full = large.model.state_dict()
        name = large.provenance.name if large.provenance is not None else None
        identity = {k: Slice(k, tuple(v.shape), (None,) * v.dim()) for k, v in full.items()}
        previous = SubNetwork(
            identity, dict(full), architecture_fingerprint(full), weights_fingerprint(full), name
        )
    slices: dict[str, Slice] = {}
    start: dict[str, Tensor] = {}
    for new, (old, index) in sources.items():
        before = previous.slices.get(old)
        if before is None:
            continue
        composed = tuple(_compose(a, b, n) for a, b, n in zip(before.index, index, before.shape, strict=True))
        factor = scales.get(new)
        scale = before.scale + (() if factor is None else (factor,))
        slices[new] = Slice(before.source, before.shape, composed, scale)
        start[new] = _cut(previous.start[old], index, factor)
        if start[new].shape != state[new].shape:
            raise ModelError(
                f"record_shrink: {new} is {tuple(state[new].shape)}, its record cuts another shape"
            )
    return SubNetwork(
        slices, start, previous.architecture, previous.weights, previous.source, list(previous.rounds)
    )


def record_round(
    student: EncoderHandle, large: EncoderHandle, plan: Plan, importance: UnitImportance | None
) -> None:
    """Add the round that cut ``student`` from ``large`` by ``plan`` to ``student``'s record.

    The layers and heads of ``large`` are renumbered to the original's through the previous round
    (``outer[inner]``, as indices compose); a ``large`` whose record has no rounds (written before they
    were recorded) has an unknown numbering, and nothing is added.
    """
    before = subnetwork_of(large)
    if before is None:  # ``large`` is the original
        config = large.model.encoder.config
        layers = list(range(int(config.num_hidden_layers)))
        heads = [list(range(int(config.num_attention_heads)))] * len(layers)
    elif before.rounds:
        layers, heads = before.rounds[-1].kept_layers, before.rounds[-1].kept_heads
    else:
        return
    record = subnetwork_of(student)
    assert record is not None  # shrink_encoder records every cut
    scored = RoundScores(
        method=None if importance is None else importance.method,
        layers=list(layers),
        heads=[list(h) for h in heads],
        kept_layers=[layers[i] for i in plan.layers],
        kept_heads=[[heads[i][u] for u in plan.units[i].tolist()] for i in plan.layers],
    )
    if importance is not None:
        scored.layer_scores = [float(x) for x in importance.layers.tolist()]
        scored.head_scores = [[float(x) for x in h.tolist()] for h in importance.heads]
    record.rounds.append(scored)
    student.subnetwork = record.to_sidecar()
