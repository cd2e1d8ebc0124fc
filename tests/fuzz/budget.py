"""How many cases each fuzz test runs, and the check that they all ran.

Every fuzz module keeps a module-level :class:`collections.Counter` of the cases its tests ran; each
test runs its Hypothesis search through :func:`run_counted`, which fails when fewer cases ran than
asked for (a strategy that filters too much, or a search cut short, would otherwise pass silently).
``FANBU_FUZZ_SCALE`` multiplies every count: ``FANBU_FUZZ_SCALE=20 pytest tests/fuzz`` for a long run.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("FANBU_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    """``n`` cases, scaled by ``FANBU_FUZZ_SCALE`` (at least one)."""
    return max(1, round(n * SCALE))


def fuzz_settings(n: int) -> settings:
    """Settings of one fuzz test: ``n`` (scaled) cases, no deadline (the machine may be busy), no example
    database on disk, and no health check that only says generation is slow or large."""
    return settings(
        max_examples=examples(n),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def run_counted(counter: Counter[str], target: str, search: Callable[[], None], n: int) -> None:
    """Run a Hypothesis ``search`` whose body adds 1 to ``counter[target]``; fail unless it ran ``n``
    (scaled) cases."""
    before = counter[target]
    search()
    ran = counter[target] - before
    assert ran >= examples(n), f"{target}: only {ran} of {examples(n)} fuzz cases ran"
