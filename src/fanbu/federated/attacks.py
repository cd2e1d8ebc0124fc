"""Attack simulator: a seeded fraction of clients turns malicious in one of four ways.

* ``label_flip``: the client trains on labels replaced by a different, random class; with ``scale``
  it also boosts its update, ``global + scale * (local - global)`` ("explicit boosting", Bhagoji et al.,
  https://arxiv.org/abs/1811.12470), so that its poisoned model is not averaged away.
* ``sign_flip``: the client sends ``global - scale * (local - global)`` (its update reversed).
* ``scaled_replacement``: the client sends ``global + scale * (local - global)``, the model-replacement
  attack of Bagdasaryan et al. (https://arxiv.org/abs/1807.00459); ``scale`` defaults to the number of
  clients, which lets one attacker replace the FedAvg average by its own model.
* ``garbage_logits``: in the logit exchange (FedMKT) the client sends random logits of large magnitude.

Everything is deterministic given ``AttackConfig.seed``, so a benchmark's attacked clients are the same
in every run and every rule is compared on the same attack.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from fanbu.config import Strict
from fanbu.errors import ConfigError

AttackKind = Literal["none", "label_flip", "sign_flip", "scaled_replacement", "garbage_logits"]
ARRAY_ATTACKS = ("sign_flip", "scaled_replacement")


class AttackConfig(Strict):
    """Which attack, on which fraction of the clients."""

    kind: AttackKind = Field("none", description="The attack the malicious clients run.")
    fraction: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of clients that are malicious.")
    scale: float | None = Field(
        None,
        gt=0,
        description="Boost of sign_flip / scaled_replacement / label_flip updates; default: 1 for sign_flip "
        "and label_flip (no boost), the number of clients for scaled_replacement.",
    )
    logit_magnitude: float = Field(
        100.0, gt=0, description="Standard deviation of the garbage logits sent by garbage_logits."
    )
    seed: int = Field(0, description="Seed of the choice of attackers and of their random draws.")

    def resolved_scale(self, n_clients: int) -> float:
        """The boost actually applied to an update with ``n_clients`` clients in the federation."""
        if self.scale is not None:
            return self.scale
        return float(n_clients) if self.kind == "scaled_replacement" else 1.0

    def rng(self, client_id: str | int) -> np.random.Generator:
        """A generator for one client's random draws, fixed by the seed and the client id."""
        return np.random.default_rng([self.seed, zlib.crc32(str(client_id).encode())])


def num_malicious(n_clients: int, fraction: float) -> int:
    """How many of ``n_clients`` are malicious at ``fraction`` (rounded half up)."""
    if n_clients < 0 or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"attack: need n_clients >= 0 and 0 <= fraction <= 1, got {n_clients}, {fraction}")
    return min(n_clients, math.floor(fraction * n_clients + 0.5 + 1e-9))


def malicious_ids(client_ids: Sequence[str | int], config: AttackConfig) -> set[str | int]:
    """The malicious clients: ``num_malicious`` of ``client_ids`` drawn with ``config.seed``.

    The draw does not depend on the order of ``client_ids``. With ``kind: none`` nobody is malicious.
    """
    if len(set(map(str, client_ids))) != len(client_ids):
        raise ConfigError("attack: client ids must be unique (as strings)")
    if config.kind == "none":
        return set()
    ordered = sorted(client_ids, key=str)
    count = num_malicious(len(ordered), config.fraction)
    chosen = np.random.default_rng(config.seed).permutation(len(ordered))[:count]
    return {ordered[i] for i in chosen}


def flip_labels(labels: Sequence[int], n_classes: int, rng: np.random.Generator) -> list[int]:
    """Replace every label by a different class drawn uniformly at random."""
    if n_classes < 2:
        raise ConfigError(f"label_flip needs at least 2 classes, got {n_classes}")
    y = np.asarray(labels, dtype=np.int64)  # (samples,)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ConfigError(f"label_flip: labels must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    shift = rng.integers(1, n_classes, size=y.shape)  # never 0, so every label changes
    return ((y + shift) % n_classes).tolist()


def boosts_update(config: AttackConfig) -> bool:
    """Whether a malicious client of ``config`` changes the arrays it sends (not only its data or logits)."""
    return config.kind in ARRAY_ATTACKS or (config.kind == "label_flip" and config.scale is not None)


def attack_arrays(
    kind: str,
    global_arrays: Sequence[np.ndarray],
    local_arrays: Sequence[np.ndarray],
    scale: float,
) -> list[np.ndarray]:
    """The arrays a malicious client sends instead of ``local_arrays``.

    ``sign_flip`` sends ``global - scale * (local - global)``; ``scaled_replacement`` sends
    ``global + scale * (local - global)``, and so does a boosted ``label_flip``. ``garbage_logits``
    does not touch the arrays (it acts on the logits), so copies of ``local_arrays`` come back.
    """
    if len(global_arrays) != len(local_arrays):
        raise ConfigError(f"attack: {len(global_arrays)} global arrays but {len(local_arrays)} local ones")
    if kind not in (*ARRAY_ATTACKS, "label_flip"):
        return [np.array(a, copy=True) for a in local_arrays]
    sign = -1.0 if kind == "sign_flip" else 1.0
    out = []
    for g, w in zip(global_arrays, local_arrays, strict=True):
        if g.shape != w.shape:
            raise ConfigError(f"attack: array shapes differ, {g.shape} vs {w.shape}")
        if not np.issubdtype(w.dtype, np.floating):
            out.append(np.array(w, copy=True))  # integer buffers (e.g. position ids) are left alone
            continue
        out.append((g + sign * scale * (w - g)).astype(w.dtype))
    return out


def attack_logits(logits: np.ndarray, rng: np.random.Generator, magnitude: float = 100.0) -> np.ndarray:
    """Garbage logits: Gaussian noise of standard deviation ``magnitude``, same shape and dtype."""
    out = rng.normal(0.0, magnitude, size=logits.shape)  # (samples, classes)
    return out.astype(logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float32)
