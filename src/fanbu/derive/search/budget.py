"""Budget checks on a candidate's size and speed, and the error when nothing fits."""

from __future__ import annotations

import math
from typing import NamedTuple

from fanbu.derive.search.config import Budget, SearchError
from fanbu.derive.search.result import TrialRecord

_SMALLER = "add smaller choices to search.space (fewer layers or heads, lower ffn, smaller vocab)"


class Over(NamedTuple):
    """Why a candidate is over budget, and by how much (``value / limit - 1``, > 0)."""

    reason: str
    excess: float


class BudgetCheck:
    """Compares a candidate's parameters and latency with the budget; returns why it is over, or None."""

    def __init__(self, budget: Budget, teacher_params: int) -> None:
        if teacher_params < 1:
            raise SearchError(
                f"teacher_params must be the teacher's parameter count (>= 1), got {teacher_params}; "
                "use fanbu.evaluate.param_count(teacher.model)"
            )
        self.budget = budget
        self.teacher_params = teacher_params

    @property
    def max_params(self) -> int | None:
        """The tightest parameter limit from ``max_params`` and ``max_param_ratio``."""
        limits = []
        if self.budget.max_params is not None:
            limits.append(self.budget.max_params)
        if self.budget.max_param_ratio is not None:
            limits.append(math.floor(self.budget.max_param_ratio * self.teacher_params * (1 + 1e-12)))
        return min(limits) if limits else None

    def params(self, n_params: int) -> Over | None:
        """Why ``n_params`` is over budget, or None when it fits."""
        limit = self.max_params
        if limit is None or n_params <= limit:
            return None
        excess = n_params / limit - 1.0
        if self.budget.max_params is not None and n_params > self.budget.max_params:
            return Over(f"params {n_params:,} > budget.max_params {self.budget.max_params:,}", excess)
        ratio = n_params / self.teacher_params
        return Over(f"param ratio {ratio:.4f} > budget.max_param_ratio {self.budget.max_param_ratio}", excess)

    def latency(self, latency_ms: float) -> Over | None:
        """Why ``latency_ms`` is over budget, or None when it fits (or no latency budget is set)."""
        limit = self.budget.max_latency_ms
        if limit is None or latency_ms <= limit:
            return None
        return Over(f"latency {latency_ms:.2f} ms > budget.max_latency_ms {limit}", latency_ms / limit - 1.0)


def infeasible_error(records: list[TrialRecord], check: BudgetCheck) -> SearchError:
    """The error when no trial was scored: which budget excluded the candidates and what to relax."""
    if not records:
        return SearchError("search: no trial finished before search.timeout_s; raise timeout_s")
    over = [r for r in records if r.state == "over_budget"]
    slow = [r for r in over if r.latency_ms is not None and check.latency(r.latency_ms) is not None]
    large = [r for r in over if r.latency_ms is None or check.latency(r.latency_ms) is None]
    failed = [r for r in records if r.state == "failed"]
    parts = [f"search: none of the {len(records)} trials produced a scored candidate within the budget"]
    if large:
        smallest = min(r.n_params for r in large if r.n_params is not None)
        parts.append(
            f"{len(large)} exceeded the parameter budget (limit {check.max_params:,} params; the smallest "
            f"candidate had {smallest:,}, ratio {smallest / check.teacher_params:.4f}): raise "
            f"budget.max_params / budget.max_param_ratio or {_SMALLER}"
        )
    if slow:
        fastest = min(r.latency_ms for r in slow if r.latency_ms is not None)
        parts.append(
            f"{len(slow)} exceeded budget.max_latency_ms {check.budget.max_latency_ms} (the fastest took "
            f"{fastest:.2f} ms): raise budget.max_latency_ms or {_SMALLER}"
        )
    if failed:
        first = failed[0]
        parts.append(
            f"{len(failed)} failed (first, trial {first.number}: {first.reason}): fix build/score or drop "
            "the space choices that break them"
        )
    return SearchError("; ".join(parts))
