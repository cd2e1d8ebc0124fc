"""Rows over seeds, the targets and the printed table of ``fanbu bench unlabeled``.

``da[*]``: per method, the mean over seeds (with a 90% t-interval, :mod:`fanbu.bench.stats`) of the target
test accuracy, of ``gap_closed = (method - source_only) / (target_supervised - source_only)`` (computed per
seed), of each mapped class's F1 and of the validation accuracy. The best method is the adaptation method
(not source-only, not the upper bound) with the highest mean source-validation accuracy: no choice reads
the target's labels.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.stats import mean_interval, seed_interval
from fanbu.bench.unlabeled.da import BASELINE, UPPER

GAP_BAR = 0.5
BEST_RULE = (
    "the adaptation method (dann, coral, mmd, self_training) with the lowest mean DEV risk: its per-text "
    "cross-entropy on the source validation split, weighted toward the target by a domain classifier's density "
    "ratio (source train vs the unlabeled target pool, frozen features) with DEV's control variate; ties go to "
    "the first in that order; the target's labels are never read for it"
)


def _gap(value: float, baseline: float, upper: float) -> float | None:
    return (value - baseline) / (upper - baseline) if upper != baseline else None


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method, in the order of the first seed's rows, averaged over the seeds."""
    methods = [row["method"] for row in runs[0]["rows"]]
    by = [{row["method"]: row for row in run["rows"]} for run in runs]
    labels = runs[0]["data"]["labels"]
    out = []
    for method in methods:
        acc, acc_interval = mean_interval([b[method]["target_acc"] for b in by])
        gaps = [_gap(b[method]["target_acc"], b[BASELINE]["target_acc"], b[UPPER]["target_acc"]) for b in by]
        known = [g for g in gaps if g is not None]
        gap, gap_interval = mean_interval(known) if known else (None, None)
        f1 = {name: statistics.fmean(b[method]["f1"][name] for b in by) for name in labels}
        f1_gains = {name: [b[method]["f1"][name] - b[BASELINE]["f1"][name] for b in by] for name in labels}
        f1_gain = {name: statistics.fmean(v) for name, v in f1_gains.items()}
        out.append({
            "method": method,
            "target_acc": acc,
            "target_acc_interval": acc_interval,
            "gap_closed": gap,
            "gap_closed_interval": gap_interval,
            "target_macro_f1": statistics.fmean(b[method]["target_macro_f1"] for b in by),
            "f1": f1,
            "f1_minus_source_only": f1_gain,
            "f1_minus_source_only_interval": {name: seed_interval(v) for name, v in f1_gains.items()},
            "validation": by[0][method]["validation"],
            "validation_acc": statistics.fmean(b[method]["validation_acc"] for b in by),
            "dev_risk": _mean_or_none([b[method].get("dev_risk") for b in by]),
            "seeds": len(by),
        })
    return out


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if len(known) == len(values) and known else None


def best_method(rows: Sequence[dict[str, Any]]) -> str:
    """The adaptation method with the lowest mean DEV risk (see :data:`BEST_RULE`); rows without one (kept
    from before DEV was recorded) fall back to the highest mean source-validation accuracy."""
    candidates = [r for r in rows if r["method"] not in (BASELINE, UPPER)]
    if all(r.get("dev_risk") is not None for r in candidates):
        return min(candidates, key=lambda r: r["dev_risk"])["method"]  # min keeps the first of equals
    return max(candidates, key=lambda r: r["validation_acc"])["method"]  # max keeps the first of equals


def best_by_validation_accuracy(rows: Sequence[dict[str, Any]]) -> str:
    """The earlier rule, for the record: the highest mean source-validation accuracy."""
    candidates = [r for r in rows if r["method"] not in (BASELINE, UPPER)]
    return max(candidates, key=lambda r: r["validation_acc"])["method"]


def targets(rows: Sequence[dict[str, Any]], best: str, seconds: float, quick: bool,
            quick_seconds: int) -> dict[str, dict[str, Any]]:
    """The issue's domain-adaptation targets (and the quick run's time), read on the means."""
    row = next(r for r in rows if r["method"] == best)
    worst_class = min(row["f1_minus_source_only"], key=row["f1_minus_source_only"].__getitem__)
    worst_gain = row["f1_minus_source_only"][worst_class]
    out = {
        "da_gap_closed": {"value": row["gap_closed"], "interval": row.get("gap_closed_interval"), "bar": GAP_BAR,
                          "met": row["gap_closed"] is not None and row["gap_closed"] >= GAP_BAR,
                          "rule": f"the best method's ({best}) mean gap_closed on 20NG -> BBC, >= bar"},
        "da_every_class_f1": {"value": worst_gain, "bar": 0.0, "met": worst_gain > 0,
                              "interval": (row.get("f1_minus_source_only_interval") or {}).get(worst_class),
                              "rule": f"the best method's ({best}) smallest mean F1 gain over source_only across "
                              "the mapped classes, > bar (it beats source-only on every class)"},
    }
    if quick:
        out["quick_seconds"] = quick_target(seconds, quick_seconds)
    return out


def quick_target(seconds: float, quick_seconds: int) -> dict[str, Any]:
    """The quick run's time target."""
    return {"value": seconds, "bar": quick_seconds, "met": seconds <= quick_seconds,
            "rule": "wall-clock seconds of the whole quick bench, <= bar"}


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _half(interval: list[float] | None) -> str:
    return "" if interval is None else f" +-{(interval[1] - interval[0]) / 2:.3f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The da table (means over seeds, +- half the 90% interval) when the da section ran, then the targets."""
    if "da" in report:
        _print_da(report, console)
    lines = [f"* best method: {BEST_RULE}"] if "da" in report else []
    for name, t in report["target"].items():
        value = _number(t["value"]) if name != "quick_seconds" else f"{t['value']:.0f}"
        lines.append(f"target {name}: {value} ({t['rule']}, bar {t['bar']:g}): {'met' if t['met'] else 'SHORT'}")
    console.print("\n".join(lines), highlight=False)


def _print_da(report: dict[str, Any], console: Console) -> None:
    labels = report["data"]["labels"]
    table = Table("method", "target_acc", "gap_closed", *(f"F1 {name}" for name in labels), "val_acc (split)", "DEV risk",
                  title=f"{report['command']} ({report['seconds']:.0f} s, {len(report['seeds'])} seeds)")
    for row in report["da"]:
        table.add_row(
            row["method"] + (" *" if row["method"] == report["best"] else ""),
            _number(row["target_acc"]) + _half(row["target_acc_interval"]),
            _number(row["gap_closed"]) + _half(row["gap_closed_interval"]),
            *(_number(row["f1"][name]) for name in labels),
            f"{_number(row['validation_acc'])} ({row['validation']})",
            _number(row.get("dev_risk")) if row.get("dev_risk") is not None else "-",
        )
    console.print(table)
