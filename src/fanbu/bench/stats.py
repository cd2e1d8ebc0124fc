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
