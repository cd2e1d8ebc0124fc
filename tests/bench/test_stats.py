"""The intervals every bench reports over seeds (``fanbu.bench.stats``)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy import stats

from fanbu.bench.stats import ratio_interval, seed_interval


def test_a_ratio_over_a_fixed_denominator_is_the_numerators_interval_scaled():
    lo, hi = seed_interval([3.0, 4.0, 6.0])
    assert ratio_interval([3.0, 4.0, 6.0], [2.0, 2.0, 2.0]) == pytest.approx([lo / 2, hi / 2])


def test_the_ratio_interval_holds_the_ratio_of_means_not_the_mean_of_ratios():
    numerators, denominators = [1.0, 2.0, 6.0], [10.0, 12.0, 16.0]
    lo, hi = ratio_interval(numerators, denominators)
    assert lo < statistics.fmean(numerators) / statistics.fmean(denominators) < hi
    # Fieller's bounds: the ratios r at which mean(a) - r mean(b) is exactly t standard errors from zero
    t = stats.t.ppf(0.95, 2)
    for r in (lo, hi):
        diffs = [a - r * b for a, b in zip(numerators, denominators, strict=True)]
        se = statistics.stdev(diffs) / math.sqrt(3)
        assert abs(statistics.fmean(diffs)) == pytest.approx(t * se)


def test_a_denominator_not_told_apart_from_zero_leaves_the_ratio_unbounded():
    assert ratio_interval([1.0, 2.0, 1.5], [0.0, 10.0, -2.0]) is None
    assert ratio_interval([1.0], [2.0]) is None  # one seed: no interval at all
    with pytest.raises(ValueError, match="2 numerators for 3 denominators"):
        ratio_interval([1.0, 2.0], [1.0, 2.0, 3.0])


def test_the_ratio_interval_covers_the_true_ratio_about_ninety_percent_of_the_time():
    rng = random.Random(0)
    covered = bounded = 0
    for _ in range(4000):
        pairs = []
        for _ in range(4):  # four seeds; numerator and denominator correlated, true ratio 0.4
            shared = rng.gauss(0, 1)
            pairs.append((4 + shared + rng.gauss(0, 0.5), 10 + 2 * shared + rng.gauss(0, 0.5)))
        interval = ratio_interval([a for a, _ in pairs], [b for _, b in pairs])
        if interval is not None:
            bounded += 1
            covered += interval[0] <= 0.4 <= interval[1]
    assert bounded > 3900
    assert 0.87 < covered / bounded < 0.93
