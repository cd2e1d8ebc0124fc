"""What every bench reports over seeds: the mean and its Student-t interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

INTERVAL_LEVEL = 0.9
INTERVAL_METHOD = (
    "90% Student-t interval of the mean over the seeds: mean +- t(0.95, n - 1) * s / sqrt(n), s the "
    "standard deviation across seeds"
)


def seed_interval(values: Sequence[float], level: float = INTERVAL_LEVEL) -> list[float] | None:
    """The ``level`` t-interval of the mean of ``values`` (one per seed); ``None`` for fewer than two."""
    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return [mean - half, mean + half]


def mean_interval(values: Sequence[float], level: float = INTERVAL_LEVEL) -> tuple[float, list[float] | None]:
    """The mean of ``values`` and its ``level`` t-interval (``None`` for one value)."""
    return statistics.fmean(values), seed_interval(values, level)


def ratio_interval(
    numerators: Sequence[float], denominators: Sequence[float], level: float = INTERVAL_LEVEL
) -> list[float] | None:
    """Fieller's ``level`` interval for ``mean(numerators) / mean(denominators)``, paired by seed.

    It always holds the ratio of the means (the value a target reports), though not symmetrically; an
    interval over each seed's own ratio need not. ``None`` for fewer than two pairs, or when the denominator's own interval reaches zero: the
    interval is then unbounded, and no finite pair of bounds is honest.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"ratio_interval: {len(numerators)} numerators for {len(denominators)} denominators")
    n = len(numerators)
    if n < 2:
        return None
    a, b = statistics.fmean(numerators), statistics.fmean(denominators)
    # variances and covariance of the two means
    vaa = statistics.variance(numerators) / n
    vbb = statistics.variance(denominators) / n
    vab = statistics.covariance(numerators, denominators) / n
    t2 = float(stats.t.ppf(0.5 + level / 2, n - 1)) ** 2
    # (a - r b)^2 = t^2 (vaa - 2 r vab + r^2 vbb), a quadratic in r
    qa, qb, qc = b * b - t2 * vbb, -2 * (a * b - t2 * vab), a * a - t2 * vaa
    if qa <= 0:
        return None
    disc = qb * qb - 4 * qa * qc
    root = math.sqrt(max(disc, 0.0))
    return [(-qb - root) / (2 * qa), (-qb + root) / (2 * qa)]
