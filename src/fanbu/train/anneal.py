"""A value annealed linearly over iterations (Reptile's outer step size, in text and RL alike)."""

from __future__ import annotations


def linear_anneal(start: float, final: float, iteration: int, iterations: int) -> float:
    """The value at ``iteration`` (0-based) of ``iterations``, linear from ``start`` to ``final``."""
    if iterations <= 1:
        return start
    share = iteration / (iterations - 1)
    return start + share * (final - start)
