"""Schedules: the sizes each pruning round keeps (:class:`Targets`) and the round loop.

``oneshot`` prunes to the final sizes at once. ``iterative`` with ``steps = k`` shrinks every dimension
in ``k`` equal rounds, re-scoring importance on the current (recovered) model each round, and calls
``recover(handle, round)`` after every round but the last: ``k - 1`` calls. The last round ends
exactly at the target; recovering after it is the next stage's job (distillation, fine-tuning).
Explicit layer indices and the vocabulary are applied in the first round, where the indices still
refer to the original model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fanbu.derive.prune.config import PruneConfig, PruneError
from fanbu.derive.prune.layout import Layout

H = TypeVar("H")


@dataclass(frozen=True)
class Targets:
    """Absolute sizes kept by one round.

    Attributes:
        layers: A count of layers, or (first round only) the exact original indices.
        units: Attention units per layer: heads (BERT) or KV groups (Llama).
        head_dim: Channels per head (BERT).
        ffn: FFN neurons per layer.
        hidden: Residual-stream width.
        vocab: Tokens kept, or ``None`` to keep the vocabulary.
    """

    layers: int | tuple[int, ...]
    units: int
    head_dim: int
    ffn: int
    hidden: int
    vocab: int | None = None

    def needs_importance(self, layout: Layout) -> bool:
        """Whether any unit is chosen by score (explicit layers and vocabulary are not)."""
        by_count = isinstance(self.layers, int) and self.layers < layout.num_layers
        return (
            by_count
            or self.units < layout.units
            or self.head_dim < layout.head_dim
            or self.ffn < layout.ffn
            or self.hidden < layout.hidden
        )


def final_targets(config: PruneConfig, layout: Layout) -> Targets:
    """The sizes the whole schedule ends at (``None`` settings keep the model's size)."""
    explicit = config.explicit_layers()
    layers: int | tuple[int, ...] = (
        tuple(explicit) if explicit is not None else (config.layers or layout.num_layers)
    )
    return Targets(
        layers=layers,
        units=layout.units if config.heads is None else config.heads // layout.group_size,
        head_dim=config.head_dim or layout.head_dim,
        ffn=config.ffn_count(layout.ffn),
        hidden=config.hidden or layout.hidden,
        vocab=config.vocab,
    )


def interpolate(start: int, end: int, step: int, steps: int) -> int:
    """Size after ``step`` of ``steps`` equal rounds from ``start`` down to ``end``."""
    return start - round((start - end) * step / steps)


def round_targets(config: PruneConfig, layout: Layout) -> list[Targets]:
    """The targets of each round, ending exactly at :func:`final_targets`."""
    final = final_targets(config, layout)
    steps = config.steps if config.schedule == "iterative" else 1
    rounds: list[Targets] = []
    hidden = layout.hidden
    for step in range(1, steps + 1):
        if isinstance(final.layers, tuple):
            layers: int | tuple[int, ...] = final.layers if step == 1 else len(final.layers)
        else:
            layers = interpolate(layout.num_layers, final.layers, step, steps)
        units = interpolate(layout.units, final.units, step, steps)
        head_dim = interpolate(layout.head_dim, final.head_dim, step, steps)
        if layout.kind == "encoder":
            # BERT derives head size = hidden / heads: the width follows heads x head_dim when it shrinks.
            hidden = units * head_dim if config.hidden is not None else layout.hidden
        else:
            hidden = _llama_hidden(layout, final.hidden, units * layout.group_size, step, steps, hidden)
        ffn = interpolate(layout.ffn, final.ffn, step, steps)
        vocab = final.vocab if step == 1 else None
        rounds.append(Targets(layers, units, head_dim, ffn, hidden, vocab))
    return rounds


def _llama_hidden(layout: Layout, end: int, q_heads: int, step: int, steps: int, previous: int) -> int:
    """Llama configs need hidden % heads == 0 in every round: the nearest such width on the way."""
    if step == steps:
        return end
    want = interpolate(layout.hidden, end, step, steps)
    candidates = [w for w in range(end, previous + 1) if w % q_heads == 0]
    if not candidates:
        raise PruneError(
            f"iterative pruning: no hidden width between {end} and {previous} is a multiple of the "
            f"{q_heads} heads kept in round {step}; use schedule: oneshot or fewer steps"
        )
    return min(candidates, key=lambda w: (abs(w - want), -w))


def run_rounds(
    handle: H,
    rounds: Sequence[Targets],
    apply: Callable[[H, Targets], H],
    recover: Callable[[H, int], None] | None = None,
) -> H:
    """Apply each round to the previous round's result; ``recover(handle, round)`` between rounds."""
    current = handle
    for number, targets in enumerate(rounds, start=1):
        current = apply(current, targets)
        if recover is not None and number < len(rounds):
            recover(current, number)
    return current
