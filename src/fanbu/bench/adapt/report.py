"""The rows, targets and table of ``fanbu bench adapt``."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.adapt.setting import METHODS
from fanbu.bench.stats import mean_interval

META_ROWS = ("fomaml", "reptile", "metasgd")
FOREST_ROWS = ("meta_forest", "meta_forest_regrow")


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``adapt`` rows: per (method, domain, k), the mean accuracy over draws and its 90% interval."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["domain"], row["k"])].append(float(row["acc"]))
    out = []
    for (method, domain, k), values in groups.items():
        mean, interval = mean_interval(values)
        lo, hi = interval if interval is not None else (None, None)
        out.append({"method": method, "domain": domain, "k": k, "acc_mean": mean, "acc_lo": lo, "acc_hi": hi,
                    "draws": len(values)})
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(out, key=lambda r: (order.get(r["method"], 99), r["k"], r["domain"]))


def _acc(adapt: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int], float]:
    return {(r["method"], r["domain"], r["k"]): r["acc_mean"] for r in adapt}


def _mean_gap(acc: dict, a: str, b: str, domains: list[str], ks: Sequence[int]) -> float | None:
    gaps = [acc[(a, d, k)] - acc[(b, d, k)] for d in domains for k in ks if (a, d, k) in acc and (b, d, k) in acc]
    return statistics.fmean(gaps) if gaps else None


def _gap_interval(
    draws: Sequence[dict[str, Any]], a: str, b: str, domains: list[str], ks: Sequence[int]
) -> list[float] | None:
    """The 90% t-interval over draws of ``a`` minus ``b`` (each draw's mean over the tasks and ``ks``)."""
    acc = {(r["method"], r["domain"], r["k"], r["draw"]): float(r["acc"]) for r in draws}
    per_draw = []
    for draw in sorted({r["draw"] for r in draws}):
        gaps = [acc[(a, d, k, draw)] - acc[(b, d, k, draw)] for d in domains for k in ks
                if (a, d, k, draw) in acc and (b, d, k, draw) in acc]
        if gaps:
            per_draw.append(statistics.fmean(gaps))
    return mean_interval(per_draw)[1] if per_draw else None


def targets(adapt: Sequence[dict[str, Any]], seconds: float, quick: bool, quick_seconds: int,
            draws: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The issue's targets on unseen tasks, read on the means over draws (``{value, bar, met, rule}``); with
    the per-draw rows (``draws``), each accuracy gap also gets its 90% interval over the draws."""
    acc = _acc(adapt)
    domains = sorted({r["domain"] for r in adapt})

    def target(value: float | None, bar: float, rule: str, below: bool = False,
               gap: tuple[str, str, tuple[int, ...]] | None = None) -> dict[str, Any]:
        met = value is not None and (value <= bar if below else value >= bar)
        found = {"value": value, "bar": bar, "met": met, "rule": rule}
        if gap is not None and draws:
            found["interval"] = _gap_interval(draws, gap[0], gap[1], domains, gap[2])
        return found

    out: dict[str, Any] = {}
    for method in META_ROWS:
        wins = [d for d in domains if (method, d, 8) in acc and ("v0_init", d, 16) in acc
                and acc[(method, d, 8)] >= acc[("v0_init", d, 16)]]
        have = any((method, d, 8) in acc and ("v0_init", d, 16) in acc for d in domains)
        out[f"{method}_8_vs_v0_init_16"] = target(
            float(len(wins)) if have else None, 4.0,
            f"tasks (of {len(domains)}) where {method} at k=8 matches or beats v0_init at k=16, >= bar")
        out[f"{method}_vs_v0_init_k4_k8"] = target(
            _mean_gap(acc, method, "v0_init", domains, (4, 8)), 0.03,
            f"{method} minus v0_init accuracy, mean over tasks and k in (4, 8), >= bar",
            gap=(method, "v0_init", (4, 8)))
    for forest in FOREST_ROWS:  # each row its own targets: no choice between them reads the test tasks
        out[f"{forest}_vs_random_forest_k8"] = target(
            _mean_gap(acc, forest, "random_forest", domains, (8,)), 0.03,
            f"{forest} minus random_forest accuracy at k=8, mean over tasks, >= bar",
            gap=(forest, "random_forest", (8,)))
        out[f"{forest}_vs_logistic_regression_k8"] = target(
            _mean_gap(acc, forest, "logistic_regression", domains, (8,)), 0.0,
            f"{forest} minus logistic_regression accuracy at k=8, mean over tasks, >= bar",
            gap=(forest, "logistic_regression", (8,)))
    if quick:
        out["quick_seconds"] = target(seconds, quick_seconds, "wall-clock seconds of the whole bench, <= bar",
                                      below=True)
    return out


def print_report(report: dict[str, Any], console: Console) -> None:
    """One table (method and k by task, mean accuracy over draws), then the targets."""
    domains = list(dict.fromkeys(r["domain"] for r in report["adapt"]))
    table = Table("method", "k", *domains, "mean", title=f"{report['command']} ({report['seconds']:.0f} s)")
    acc = _acc(report["adapt"])
    for method in METHODS:
        for k in sorted({r["k"] for r in report["adapt"]}):
            values = [acc.get((method, d, k)) for d in domains]
            known = [v for v in values if v is not None]
            if not known:
                continue
            table.add_row(method, str(k), *("-" if v is None else f"{v:.3f}" for v in values),
                          f"{statistics.fmean(known):.3f}")
    if report["adapt"]:
        console.print(table)
    if "search" in report:
        search = Table("domain", "cold trials to its best", "warm trials to the cold best", "own arch retention",
                       "swarm arch retention", title="architecture search, cold vs warm (means over seeds)")
        swarm = report["swarm_arch"]
        for domain, row in report["search"].items():
            own = swarm["domains"][domain]
            search.add_row(domain, f"{row['cold_trials_to_best']:.2f}", f"{row['warm_trials_to_best']:.2f}",
                           f"{own['own_retention']:.3f}", f"{own['swarm_retention']:.3f}")
        console.print(search)
        console.print(f"swarm architecture: {swarm['params']}", highlight=False)
    for name, t in report["target"].items():
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        console.print(f"target {name}: {value} ({t['rule']}, bar {t['bar']:.3g}): {'met' if t['met'] else 'SHORT'}",
                      highlight=False)
