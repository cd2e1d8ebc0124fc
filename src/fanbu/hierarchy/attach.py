"""Attach a new domain under the nearest group: by the recipe's explicit group, or by the cosine between the
new domain's mean trunk feature (its centroid) and each group's centroid (the mean over its leaves' examples).

Optionally (``center``) the cosines are taken after subtracting the mean of the known leaves' examples,
which removes the direction that sentence-encoder features share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from fanbu.errors import ConfigError
from fanbu.hierarchy.data import Examples
from fanbu.hierarchy.stack import AdapterStack
from fanbu.hierarchy.tree import ROOT


@dataclass(frozen=True)
class Attachment:
    """Where a new domain goes and why: ``source`` is ``recipe`` or ``centroid``."""

    domain: str
    group: str
    source: str
    similarities: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def centroid(stack: AdapterStack, examples: Examples, batch_size: int = 64) -> Tensor:
    """The mean plain-trunk feature (no adapter active) of ``examples``: ``(hidden,)``."""
    was = stack.training
    stack.eval()
    try:
        parts = [
            stack.features(ROOT, **examples.select(range(s, min(s + batch_size, len(examples)))).inputs)
            for s in range(0, len(examples), batch_size)
        ]
    finally:
        stack.train(was)
    return torch.cat(parts).mean(dim=0)  # (hidden,)


def group_centroids(stack: AdapterStack, leaves: Mapping[str, Examples]) -> dict[str, Tensor]:
    """Each group's centroid: the example-weighted mean of its leaves' trunk centroids."""
    return _group_centroids(stack, {leaf: (centroid(stack, ex), len(ex)) for leaf, ex in leaves.items()})


def _group_centroids(stack: AdapterStack, means: Mapping[str, tuple[Tensor, int]]) -> dict[str, Tensor]:
    out = {}
    for group in stack.tree.groups:
        under = [leaf for leaf in stack.tree.leaves_under(group) if leaf in means]
        if under:
            total = sum(means[leaf][1] for leaf in under)
            out[group] = sum(means[leaf][0] * means[leaf][1] for leaf in under) / total  # (hidden,)
    return out


def nearest_group(
    stack: AdapterStack,
    name: str,
    examples: Examples,
    leaves: Mapping[str, Examples],
    group: str | None = None,
    center: bool = False,
) -> Attachment:
    """Where domain ``name`` attaches: the recipe's ``group`` when given, else the most similar group.

    The cosine similarity to every group's centroid is reported either way; ``center`` subtracts the mean
    feature of the known leaves' examples first.
    """
    means = {leaf: (centroid(stack, ex), len(ex)) for leaf, ex in leaves.items()}
    centroids = _group_centroids(stack, means)
    if not centroids:
        raise ConfigError("no group has leaf examples to compare with; give examples of the existing leaves")
    total = sum(n for _, n in means.values())
    shift = sum(m * n for m, n in means.values()) / total if center else 0.0  # (hidden,)
    new = centroid(stack, examples) - shift  # (hidden,)
    sims = {g: float(F.cosine_similarity(new, c - shift, dim=0)) for g, c in centroids.items()}
    if group is not None:
        if group not in stack.tree.groups:
            raise ConfigError(
                f"domain '{name}': group '{group}' is unknown (groups: {', '.join(stack.tree.groups)}); fix the "
                "domain's group or leave it unset to attach by similarity"
            )
        return Attachment(name, group, "recipe", sims)
    return Attachment(name, max(sims, key=sims.__getitem__), "centroid", sims)
