"""Deterministic, label-stratified index selection behind :class:`~fanbu.data.domain.Split`.

Every function takes the labels (or ``None`` for unlabeled data) and a seed, and returns sorted
indices, so a subset keeps the order of the split it came from and the same seed always gives the
same subset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _by_label(labels: Sequence[int]) -> dict[int, np.ndarray]:
    """Indices of each label, labels in ascending order so the rng is consumed deterministically."""
    array = np.asarray(labels, dtype=np.int64)  # (n,)
    return {int(label): np.flatnonzero(array == label) for label in np.unique(array)}


def _round(x: float) -> int:
    """Round half up (Python's ``round`` rounds half to even, which surprises at .5)."""
    return math.floor(x + 0.5)


def split_indices(
    labels: Sequence[int] | None, size: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(size)`` into (taken, rest) with ``fraction`` of each label on the taken side.

    A label with at least two examples keeps at least one on each side; a label with one example goes
    where rounding puts it. Unlabeled data is a plain shuffled split with both sides non-empty when
    ``size >= 2``.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        take = _round(size * fraction)
        if size >= 2:
            take = min(max(take, 1), size - 1)
        order = rng.permutation(size)
        return np.sort(order[:take]), np.sort(order[take:])
    taken: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for members in _by_label(labels).values():
        count = len(members)
        take = _round(count * fraction)
        if count >= 2:
            take = min(max(take, 1), count - 1)
        shuffled = rng.permutation(members)
        taken.append(shuffled[:take])
        rest.append(shuffled[take:])
    return _sorted_concat(taken), _sorted_concat(rest)


def _allocate(counts: dict[int, int], n: int) -> dict[int, int]:
    """Share ``n`` among labels in proportion to ``counts`` (largest remainder, one each when possible)."""
    total = sum(counts.values())
    quotas = {label: n * count / total for label, count in counts.items()}
    alloc = {label: min(math.floor(q), counts[label]) for label, q in quotas.items()}
    if n >= len(counts):
        alloc = {label: max(a, 1) for label, a in alloc.items()}
    while sum(alloc.values()) > n:  # the one-per-label floor overshot: trim the largest shares
        label = max(alloc, key=lambda k: (alloc[k], -k))
        alloc[label] -= 1
    by_remainder = sorted(counts, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), k))
    while sum(alloc.values()) < n:
        for label in by_remainder:
            if sum(alloc.values()) == n:
                break
            if alloc[label] < counts[label]:
                alloc[label] += 1
    return alloc


def sample_indices(labels: Sequence[int] | None, size: int, n: int, seed: int) -> np.ndarray:
    """``n`` indices out of ``range(size)``, label proportions kept (every label present if ``n`` allows)."""
    rng = np.random.default_rng(seed)
    if n >= size:
        return np.arange(size)
    if labels is None:
        return np.sort(rng.choice(size, size=n, replace=False))
    groups = _by_label(labels)
    alloc = _allocate({label: len(members) for label, members in groups.items()}, n)
    chosen = [rng.permutation(members)[: alloc[label]] for label, members in groups.items()]
    return _sorted_concat(chosen)


def cap_indices(labels: Sequence[int] | None, size: int, cap: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``cap`` examples of each label (``cap`` in total when unlabeled)."""
    if labels is None:
        return sample_indices(None, size, cap, seed)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(members)[:cap] for members in _by_label(labels).values()]
    return _sorted_concat(chosen)


def shuffle_indices(size: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(size)``."""
    return np.random.default_rng(seed).permutation(size)


def _sorted_concat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts))
