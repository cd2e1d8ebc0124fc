"""The report of ``fanbu bench rl``: rows averaged over seeds, the targets, the printed table.

Rows (each a mean over the draws' seeds, with its 90% t-interval, :mod:`fanbu.bench.stats`):

- ``experts[*].{family, variant, return}``;
- ``general[*].{family, method, variant, return, ratio_to_expert}``; ``ratio_to_expert`` is where the
  return lies from a random policy's (0) to the variant's expert (1) on the same test episodes;
- ``adapt[*].{family, init, variant, steps_to_90pct}``; a run that did not reach the target within
  ``adaptation.max_steps`` counts as ``max_steps`` in the mean (censored; ``reached`` says how often
  it got there).

Targets (``target.{name: {value, bar, met, rule}}``, read on the means):

- ``distill_min_ratio``: the distilled policy's lowest ``ratio_to_expert`` over training variants >= 0.9;
- ``distill_vs_multi_ppo``: its mean ratio minus the multi-variant PPO baseline's >= 0;
- ``meta_vs_scratch``: mean steps from the meta-init / mean steps from scratch, held-out variants, <= 1/3;
- ``meta_vs_distilled``: the same against the distilled policy, <= 2/3;
- ``quick_seconds`` (with ``--quick``): the whole bench within 1800 s.

With the draws, each target but ``quick_seconds`` also carries its 90% ``interval`` over the seeds:
``distill_min_ratio`` the interval of the worst variant's mean ratio; ``distill_vs_multi_ppo`` the
interval of each seed's own difference (their mean is the value); the two step ratios Fieller's interval
for the ratio of the seeds' mean steps, which holds the value (none while the denominator's own interval
reaches zero steps: it is then unbounded).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.stats import mean_interval, ratio_interval, seed_interval

Key = Callable[[dict[str, Any]], tuple]


def _average(rows: Sequence[dict[str, Any]], key: tuple[str, ...], value: str,
             fill: Callable[[dict[str, Any]], float | None] | None = None) -> list[dict[str, Any]]:
    """Rows grouped by ``key`` fields, ``value`` averaged (``fill`` replaces a missing value)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    order: list[tuple] = []
    for row in rows:
        k = tuple(row[f] for f in key)
        if k not in groups:
            order.append(k)
        number = row[value] if row[value] is not None else (fill(row) if fill else None)
        if number is not None:
            groups[k].append(float(number))
        else:
            groups.setdefault(k, [])
    out = []
    for k in order:
        values = groups[k]
        mean, interval = mean_interval(values) if values else (None, None)
        out.append({"name": "/".join(map(str, k)), **dict(zip(key, k, strict=True)), value: mean,
                    "interval": interval, "n": len(values)})
    return out


def summarise(draws: Sequence[dict[str, Any]], max_steps: dict[str, int]) -> dict[str, Any]:
    """The report's rows from every draw (``max_steps``: per family, the adaptation budget)."""
    experts = [{"family": d["family"], **r} for d in draws for r in d["experts"]]
    general = [{"family": d["family"], **r} for d in draws for r in d["general"]]
    adapt = [{"family": d["family"], **r} for d in draws for r in d["adapt"]]
    general_rows = _average(general, ("family", "method", "variant"), "return")
    ratios = _average(general, ("family", "method", "variant"), "ratio_to_expert")
    for row, ratio in zip(general_rows, ratios, strict=True):
        row["ratio_to_expert"], row["ratio_interval"] = ratio["ratio_to_expert"], ratio["interval"]
    adapt_rows = _average(adapt, ("family", "init", "variant"), "steps_to_90pct",
                          fill=lambda r: max_steps[r["family"]])
    reached = _average([{**r, "reached": float(r["reached"])} for r in adapt], ("family", "init", "variant"), "reached")
    for row, share in zip(adapt_rows, reached, strict=True):
        row["reached_share"] = share["reached"]
    return {"experts": _average(experts, ("family", "variant"), "return"), "general": general_rows,
            "adapt": adapt_rows}


def headline(rows: dict[str, Any]) -> dict[str, float]:
    """The figures `fanbu bench results` shows first: mean ratio_to_expert per general method, mean steps to
    90% per initialisation (over families and variants)."""
    out = {}
    for method in sorted({r["method"] for r in rows["general"]}):
        values = [r["ratio_to_expert"] for r in rows["general"] if r["method"] == method]
        if values and all(v is not None for v in values):
            out[f"{method}_ratio_to_expert"] = statistics.fmean(values)
    for init in sorted({r["init"] for r in rows["adapt"]}):
        values = [r["steps_to_90pct"] for r in rows["adapt"] if r["init"] == init]
        if values and all(v is not None for v in values):
            out[f"{init}_steps_to_90pct"] = statistics.fmean(values)
    return out


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return 0.0 if numerator == 0 else math.inf


def _intervals(rows: dict[str, Any], draws: Sequence[dict[str, Any]],
               max_steps: dict[str, int]) -> dict[str, list[float] | None]:
    """The 90% interval over seeds of every target (module docstring)."""
    gaps: list[float] = []
    seed_steps: dict[str, list[float]] = {"meta": [], "scratch": [], "distilled": []}
    for seed in sorted({d["seed"] for d in draws}):
        seed_rows = summarise([d for d in draws if d["seed"] == seed], max_steps)
        found = targets(seed_rows, 0.0, False, 0)
        if found["distill_vs_multi_ppo"]["value"] is not None:
            gaps.append(found["distill_vs_multi_ppo"]["value"])
        steps = {init: [r["steps_to_90pct"] for r in seed_rows["adapt"] if r["init"] == init]
                 for init in ("meta", "scratch", "distilled")}
        for init, values in seed_steps.items():
            if steps[init]:
                values.append(statistics.fmean(steps[init]))
    out: dict[str, list[float] | None] = {"distill_vs_multi_ppo": seed_interval(gaps)}
    for other in ("scratch", "distilled"):  # a seed without adaptation runs leaves the ratio without an interval
        known = len(seed_steps["meta"]) == len(seed_steps[other]) == len({d["seed"] for d in draws})
        out[f"meta_vs_{other}"] = ratio_interval(seed_steps["meta"], seed_steps[other]) if known else None
    distill = [r for r in rows["general"] if r["method"] == "distill" and r["ratio_to_expert"] is not None]
    if distill:
        out["distill_min_ratio"] = min(distill, key=lambda r: r["ratio_to_expert"])["ratio_interval"]
    return out


def targets(rows: dict[str, Any], seconds: float, quick: bool, quick_seconds: int,
            draws: Sequence[dict[str, Any]] = (), max_steps: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """The issue's targets, read on the rows' means; with the ``draws`` (and the adaptation budgets
    ``max_steps`` per family), each also gets its 90% interval over the seeds."""

    def target(value: float | None, bar: float, rule: str, below: bool = False) -> dict[str, Any]:
        met = value is not None and (value <= bar if below else value >= bar)
        return {"value": value, "bar": bar, "met": met, "rule": rule}

    def ratios(method: str) -> list[float | None]:
        return [r["ratio_to_expert"] for r in rows["general"] if r["method"] == method]

    distill, multi = ratios("distill"), ratios("multi_ppo")
    known = all(r is not None for r in (*distill, *multi)) and distill
    steps = {init: [r["steps_to_90pct"] for r in rows["adapt"] if r["init"] == init] for init in ("meta", "distilled",
                                                                                                  "scratch")}
    mean_steps = {k: statistics.fmean(v) if v else None for k, v in steps.items()}
    out = {
        "distill_min_ratio": target(min(distill) if known else None, 0.9,
                                    "distilled policy's lowest ratio_to_expert over training variants, >= bar"),
        "distill_vs_multi_ppo": target(statistics.fmean(distill) - statistics.fmean(multi) if known else None, 0.0,
                                       "mean ratio_to_expert, distilled minus multi-variant PPO, >= bar"),
    }
    if all(v is not None for v in mean_steps.values()):
        out["meta_vs_scratch"] = target(_ratio(mean_steps["meta"], mean_steps["scratch"]), 1 / 3,
                                        "mean steps to 90%, meta-init / scratch, held-out variants, <= bar", below=True)
        out["meta_vs_distilled"] = target(_ratio(mean_steps["meta"], mean_steps["distilled"]), 2 / 3,
                                          "mean steps to 90%, meta-init / distilled, held-out variants, <= bar",
                                          below=True)
    if quick:
        out["quick_seconds"] = target(seconds, quick_seconds, "wall-clock seconds of the whole bench, <= bar",
                                      below=True)
    if draws and max_steps is not None:
        for name, interval in _intervals(rows, draws, max_steps).items():
            if name in out:
                out[name]["interval"] = interval
    return out


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The rows as three tables, then the targets."""
    experts = Table("family", "variant", "return", title=f"{report['command']} ({report['seconds']:.0f} s)")
    for row in report["experts"]:
        experts.add_row(row["family"], row["variant"], _number(row["return"]))
    general = Table("family", "method", "variant", "return", "ratio_to_expert")
    for row in report["general"]:
        general.add_row(row["family"], row["method"], row["variant"], _number(row["return"]),
                        _number(row["ratio_to_expert"], 3))
    adapt = Table("family", "init", "variant", "steps_to_90pct", "reached")
    for row in report["adapt"]:
        adapt.add_row(row["family"], row["init"], row["variant"], _number(row["steps_to_90pct"], 0),
                      _number(row["reached_share"], 2))
    for table in (experts, general, adapt):
        console.print(table)
    for name, t in report["target"].items():
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        if t.get("interval"):
            value += f" [{t['interval'][0]:.3f}, {t['interval'][1]:.3f}]"
        console.print(f"target {name}: {value} ({t['rule']}, bar {t['bar']:.3g}): {'met' if t['met'] else 'SHORT'}",
                      highlight=False)
