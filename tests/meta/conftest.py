"""Toy feature tasks: Gaussian classes in a few dimensions, shared across domains so meta-learning has
something to share."""

from __future__ import annotations

import pytest
import torch

from fanbu.meta.episodes import FeatureTask


def toy_task(name: str, labels: int, per_label: int = 30, dim: int = 12, seed: int = 0) -> FeatureTask:
    """``labels`` Gaussian classes of ``per_label`` examples in ``dim`` dimensions."""
    gen = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(labels, dim, generator=gen)  # (labels, dim)
    y = torch.arange(labels).repeat_interleave(per_label)  # (n,)
    x = centres[y] + torch.randn(len(y), dim, generator=gen)  # (n, dim)
    return FeatureTask(name, x, y, tuple(f"{name}-{i}" for i in range(labels)))


@pytest.fixture
def tasks() -> list[FeatureTask]:
    return [toy_task("a", 3, seed=1), toy_task("b", 4, seed=2), toy_task("c", 3, seed=3)]
