"""One architecture for the whole swarm: the candidate that serves every domain well under the budget.

After each domain's own search, the candidates are each domain's best few architectures (their union).
Every candidate is scored on every domain, relative to that domain's own searched best (1.0: as good as
the architecture searched for the domain alone), and the one with the best mean relative score is the
swarm architecture: one shape to build, quantise and serve for every domain.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fanbu.derive.search.config import SearchError
from fanbu.derive.search.result import SearchResult


@dataclass(frozen=True)
class SwarmChoice:
    """The swarm architecture, its mean relative score and each domain's, and every candidate's mean."""

    params: dict[str, Any]
    relative: float
    per_domain: dict[str, float]
    candidates: list[dict[str, Any]]


def swarm_candidates(results: Mapping[str, SearchResult], fields: list[str], top: int) -> list[dict[str, Any]]:
    """The union of every domain's ``top`` best-scoring architectures (``fields`` of each), first seen first."""
    if top < 1:
        raise SearchError(f"swarm top {top}: take at least each domain's best architecture (top >= 1)")
    seen: dict[str, dict[str, Any]] = {}
    for result in results.values():
        scored = [t for t in result.trials if t.state == "complete" and t.score is not None]
        for trial in sorted(scored, key=lambda t: (-float(t.score), t.number))[:top]:  # type: ignore[arg-type]
            arch = {name: trial.params.get(name) for name in fields}
            seen.setdefault(json.dumps(arch, sort_keys=True), arch)
    return list(seen.values())


def swarm_architecture(
    results: Mapping[str, SearchResult],
    score: Callable[[str, dict[str, Any]], float],
    fields: list[str],
    top: int = 3,
) -> SwarmChoice:
    """Choose the architecture with the best mean score relative to each domain's searched best.

    Args:
        results: Each domain's finished search (the reference is its ``best_score``).
        score: ``score(domain, architecture)``: the same validation score the searches used (cache it:
            a domain's own trials are asked for again).
        fields: The fields that make an architecture (the search space's dimensions).
        top: Each domain's best architectures that become candidates.

    Raises:
        SearchError: no domain, or a domain whose search found no positive score.
    """
    if not results:
        raise SearchError("swarm architecture: no domain searched; run a search per domain first")
    bad = [d for d, r in results.items() if r.best_score <= 0]
    if bad:
        raise SearchError(f"swarm architecture: the searches of {bad} found no positive score to compare with")
    candidates = swarm_candidates(results, fields, top)
    table = []
    for arch in candidates:
        per_domain = {d: float(score(d, arch)) / r.best_score for d, r in results.items()}
        table.append((statistics.fmean(per_domain.values()), arch, per_domain))
    best = max(table, key=lambda row: row[0])  # first among equals: candidates keep the domains' order
    return SwarmChoice(best[1], best[0], best[2],
                       [{"params": arch, "relative": mean, "per_domain": per} for mean, arch, per in table])
