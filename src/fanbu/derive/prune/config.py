"""Pruning settings (:class:`PruneConfig`), calibration data (:class:`Calibration`) and :class:`PruneError`.

Every size in :class:`PruneConfig` is what is *kept*; ``None`` keeps that dimension as it is. Whether a
setting fits a particular model (enough heads, whole KV groups, BERT's ``hidden = heads x head_dim``) is
checked by :func:`fanbu.derive.prune.checks.check_config` once the model is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError

ImportanceName = Literal["magnitude", "taylor", "activation", "minitron"]
ScheduleName = Literal["oneshot", "iterative"]


class PruneError(ConfigError):
    """A pruning setting does not fit the model (too many heads, partial KV groups, unsupported unit)."""


class PruneConfig(Strict):
    """What structured pruning keeps, how units are scored and in how many rounds."""

    layers: int | list[int] | None = Field(
        None,
        description="Layers kept: a count (the most important, order kept) or exactly these 0-based indices.",
    )
    heads: int | None = Field(
        None,
        ge=1,
        description="Attention heads kept per layer (Llama: query heads, a multiple of the KV group size).",
    )
    head_dim: int | None = Field(
        None, ge=1, description="Encoder only: channels kept per head (q/k/v width of each head)."
    )
    ffn: int | float | None = Field(
        None, description="FFN neurons kept per layer: an int count, or a float fraction in (0, 1]."
    )
    hidden: int | None = Field(
        None,
        ge=1,
        description="Residual stream width kept (BERT: must equal heads x head_dim after pruning).",
    )
    vocab: int | None = Field(
        None,
        ge=1,
        description="Encoder only: tokens kept (specials and single characters always, then the most "
        "frequent in the calibration texts).",
    )
    importance: ImportanceName = Field(
        "magnitude",
        description="Unit score: weight magnitude, first-order Taylor, Wanda activation-weighted, or "
        "minitron (Llama: mean |activation| of each unit on calibration text; layers by block influence).",
    )
    schedule: ScheduleName = Field("oneshot", description="Prune at once, or in `steps` equal rounds.")
    steps: int = Field(1, ge=1, description="Iterative schedule: rounds, with `recover` called between them.")

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        if isinstance(self.layers, int) and self.layers < 1:
            raise ValueError(f"layers={self.layers}: keep at least 1 layer (or give a list of indices)")
        if isinstance(self.layers, list):
            if not self.layers:
                raise ValueError("layers=[]: list at least one layer index to keep, or give a count")
            if min(self.layers) < 0 or len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers={self.layers}: indices must be distinct and >= 0 (0-based)")
        if isinstance(self.ffn, float) and not 0.0 < self.ffn <= 1.0:
            raise ValueError(f"ffn={self.ffn}: a float is a fraction kept, in (0, 1]; or give an int count")
        if isinstance(self.ffn, int) and self.ffn < 1:
            raise ValueError(f"ffn={self.ffn}: keep at least 1 neuron (or give a fraction in (0, 1])")
        if self.steps > 1 and self.schedule != "iterative":
            raise ValueError(f"steps={self.steps} needs schedule: iterative (oneshot prunes in 1 step)")
        return self

    def ffn_count(self, total: int) -> int:
        """FFN neurons kept out of ``total``: the count, or the fraction rounded (at least 1)."""
        if self.ffn is None:
            return total
        if isinstance(self.ffn, float):
            return max(1, round(self.ffn * total))
        return self.ffn

    def explicit_layers(self) -> list[int] | None:
        """The layer indices given explicitly (sorted), or ``None`` when ``layers`` is a count or unset."""
        return sorted(self.layers) if isinstance(self.layers, list) else None


@dataclass
class Calibration:
    """Texts that importance scores and vocabulary counts are computed on.

    Attributes:
        texts: Calibration texts (a few hundred are plenty).
        labels: Label indices of ``texts``; Taylor importance on an encoder needs them (task loss).
        head: The encoder head the Taylor loss uses (may be omitted when the handle has one head).
        batch_size: Texts per forward pass.
        max_batches: At most this many batches are scored (vocabulary counts use every text).
    """

    texts: Sequence[str]
    labels: Sequence[int] | None = None
    head: str | None = None
    batch_size: int = 16
    max_batches: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.texts, str) or len(self.texts) == 0:
            raise ConfigError("Calibration.texts: give a non-empty list of texts (not a single string)")
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ConfigError(
                f"Calibration.labels: {len(self.labels)} labels for {len(self.texts)} texts; give one per text"
            )
        if self.batch_size < 1 or self.max_batches < 1:
            raise ConfigError(
                f"Calibration: batch_size ({self.batch_size}) and max_batches ({self.max_batches}) must be >= 1"
            )

    def batches(self) -> list[tuple[list[str], list[int] | None]]:
        """The scored batches: ``(texts, labels or None)``, at most ``max_batches`` of ``batch_size``."""
        out = []
        for start in range(0, len(self.texts), self.batch_size):
            if len(out) == self.max_batches:
                break
            stop = start + self.batch_size
            labels = None if self.labels is None else [int(x) for x in self.labels[start:stop]]
            out.append(([str(t) for t in self.texts[start:stop]], labels))
        return out
