"""Few-shot episodes over the swarm's domains: k-shot, n-way tasks drawn (seeded) from each domain's labels.

A :class:`FeatureTask` is one domain's split as pooled features and label ids. An :class:`Episode` is a
k-shot n-way task drawn from one: ``n_way`` of its labels (renumbered ``0..n_way-1`` in the order drawn),
``k`` support and ``query`` query examples of each, disjoint. :func:`sample_shots` draws the k labelled
examples per class that adaptation to a new domain gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fanbu.errors import ConfigError


@dataclass(frozen=True)
class FeatureTask:
    """One domain's split as features ``(n, dim)`` and label ids ``(n,)`` (indices into ``label_names``)."""

    name: str
    features: Tensor
    labels: Tensor
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.labels.ndim != 1 or len(self.features) != len(self.labels):
            raise ConfigError(f"task {self.name!r}: features must be (n, dim) and labels (n,), got "
                              f"{tuple(self.features.shape)} and {tuple(self.labels.shape)}")

    @property
    def num_labels(self) -> int:
        """How many labels the domain has."""
        return len(self.label_names)

    def class_counts(self) -> dict[int, int]:
        """Examples per label id (labels without examples count 0)."""
        counts = torch.bincount(self.labels, minlength=self.num_labels).tolist()
        return dict(enumerate(counts))


@dataclass(frozen=True)
class Episode:
    """A k-shot n-way task: support ``(n_way*k, dim)`` / ``(n_way*k,)``, query ``(n_way*q, dim)`` / ``(n_way*q,)``."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


def check_shots(task: FeatureTask, k: int, setting: str = "k", extra: int = 0) -> None:
    """Raise :class:`ConfigError` when a label of ``task`` has fewer than ``k + extra`` examples."""
    if k < 1:
        raise ConfigError(f"{setting} = {k}: draw at least one example per class")
    short = {task.label_names[c]: n for c, n in task.class_counts().items() if n < k + extra}
    if short:
        raise ConfigError(
            f"{setting} = {k}{f' (+ {extra} query)' if extra else ''} per class is more than domain "
            f"{task.name!r} has for {short} (examples per class); lower {setting} to at most "
            f"{min(short.values()) - extra}, or give the domain more examples"
        )


def _per_class(labels: np.ndarray, classes: Sequence[int], take: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(np.flatnonzero(labels == c))[:take] for c in classes]


def sample_shots(task: FeatureTask, k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` examples of every label of ``task``, drawn with ``seed`` (sorted by label)."""
    check_shots(task, k)
    rng = np.random.default_rng(seed)
    picks = _per_class(task.labels.numpy(), range(task.num_labels), k, rng)
    return np.concatenate(picks)


def sample_episode(task: FeatureTask, n_way: int, k: int, query: int, rng: np.random.Generator,
                   query_task: FeatureTask | None = None) -> Episode:
    """One episode of ``task``: ``min(n_way, labels)`` labels, ``k`` support and ``query`` query per label.

    ``query_task``: draw the query from this split of the same domain (e.g. validation) instead of
    ``task``'s own remaining examples.
    """
    ways = min(n_way, task.num_labels)
    classes = rng.choice(task.num_labels, size=ways, replace=False)
    labels = task.labels.numpy()
    if query_task is None:
        check_shots(task, k, extra=query)
        picks = _per_class(labels, classes, k + query, rng)
        support = [p[:k] for p in picks]
        queries = [p[k:] for p in picks]
        qx = task.features
    else:
        check_shots(task, k)
        check_shots(query_task, query, setting="query")
        support = _per_class(labels, classes, k, rng)
        queries = _per_class(query_task.labels.numpy(), classes, query, rng)
        qx = query_task.features
    sy = torch.arange(ways).repeat_interleave(k)  # (ways*k,)
    qy = torch.arange(ways).repeat_interleave(query)  # (ways*query,)
    return Episode(task.features[np.concatenate(support)], sy, qx[np.concatenate(queries)], qy)


def stack_episodes(episodes: Sequence[Episode]) -> Episode:
    """Episodes of one shape stacked on a leading batch axis (for ``torch.func.vmap``)."""
    return Episode(*(torch.stack([getattr(e, f) for e in episodes]) for f in
                     ("support_x", "support_y", "query_x", "query_y")))


def check_left_out(meta_domains: Sequence[str], left_out: Sequence[str], setting: str = "meta_domains") -> None:
    """Raise :class:`ConfigError` when a left-out (test) domain is also a meta-training domain."""
    both = sorted(set(meta_domains) & set(left_out))
    if both:
        raise ConfigError(
            f"{both}: left out for testing but also in {setting}; a domain the model adapts to must never "
            f"take part in meta-training: remove it from {setting}"
        )
    if not meta_domains:
        raise ConfigError(f"{setting} is empty: meta-train on at least one domain")
