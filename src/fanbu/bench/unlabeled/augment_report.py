"""The ``augment`` section's rows over seeds, its targets and its table.

``augment[*]``: per task (``head``, ``distill``) and kind (``none``, ``lm``, ``gan``), the mean over seeds
(with a 90% t-interval) of test accuracy and PGR. The best generator of a task is the kind (``lm`` or
``gan``) with the higher mean validation accuracy; its gain over ``none`` is read on test once.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.stats import mean_interval, seed_interval
from fanbu.bench.unlabeled.augment import KINDS, TASKS

GAIN_BAR = 0.02
BEST_GENERATOR_RULE = ("per task, the generator (lm, gan) with the higher mean validation accuracy over seeds; "
                       "ties go to lm; the test split is not read for it")


def _mean(values: Sequence[float | None]) -> tuple[float | None, list[float] | None]:
    known = [v for v in values if v is not None]
    return mean_interval(known) if known else (None, None)


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, kind), averaged over the seeds."""
    out = []
    for task in TASKS:
        for kind in KINDS:
            rows = [r for run in runs for r in run["rows"] if r["task"] == task and r["kind"] == kind]
            acc, acc_interval = _mean([r["acc"] for r in rows])
            pgr, pgr_interval = _mean([r["pgr"] for r in rows])
            agreement = _mean([r.get("agreement") for r in rows])[0]
            out.append({
                "task": task, "kind": kind, "pool": rows[0]["pool"], "synthetic": statistics.fmean(
                    r["synthetic"] for r in rows), "synthetic_share": statistics.fmean(r["synthetic_share"] for r in rows),
                "acc": acc, "acc_interval": acc_interval, "pgr": pgr, "pgr_interval": pgr_interval,
                "validation_acc": statistics.fmean(r["validation_acc"] for r in rows),
                "acceptance": rows[0]["acceptance"], "agreement": agreement,
                "gan_steps": [r["gan_steps"] for r in rows] if kind == "gan" else None,
                "steps": rows[0]["steps"], "seeds": len(rows),
            })
    return out


def _row(rows: Sequence[dict[str, Any]], task: str, kind: str) -> dict[str, Any]:
    return next(r for r in rows if r["task"] == task and r["kind"] == kind)


def best_generators(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per task, the generator chosen on validation (see :data:`BEST_GENERATOR_RULE`)."""
    return {task: max(("lm", "gan"), key=lambda k: _row(rows, task, k)["validation_acc"]) for task in TASKS}


def gan_reason(rows: Sequence[dict[str, Any]], task: str) -> str:
    """Why the GAN row went as it did, in measured terms."""
    gan, none = _row(rows, task, "gan"), _row(rows, task, "none")
    verdict = "beats" if gan["acc"] > none["acc"] else "does not beat"
    return (f"gan {verdict} none on {task} ({gan['acc']:.3f} vs {none['acc']:.3f} test acc); it learns from "
            f"{gan['pool']} real rows; the held-out feature checker agrees with its samples' conditioning labels on "
            f"{gan['agreement'] or 0:.0%} of them")


def _gain_interval(runs: Sequence[dict[str, Any]], task: str, kind: str, metric: str) -> list[float] | None:
    """The 90% interval over seeds of each seed's ``metric`` of ``kind`` minus none's on ``task``."""
    gains = []
    for run in runs:
        by_kind = {r["kind"]: r[metric] for r in run["rows"] if r["task"] == task}
        if by_kind.get(kind) is not None and by_kind.get("none") is not None:
            gains.append(by_kind[kind] - by_kind["none"])
    return seed_interval(gains)


def targets(rows: Sequence[dict[str, Any]], best: dict[str, str],
            runs: Sequence[dict[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """Per task: the best generator's gain over none (accuracy or PGR, whichever is larger), >= 2 points;
    with the seeds' ``runs``, its 90% interval over the seeds (of the same metric)."""
    out = {}
    for task in TASKS:
        chosen, none = _row(rows, task, best[task]), _row(rows, task, "none")
        acc_gain = chosen["acc"] - none["acc"]
        pgr_gain = (chosen["pgr"] - none["pgr"]) if chosen["pgr"] is not None and none["pgr"] is not None else None
        value = max(acc_gain, pgr_gain) if pgr_gain is not None else acc_gain
        out[f"augment_{task}_gain"] = {
            "value": value, "bar": GAIN_BAR, "met": value >= GAIN_BAR, "acc_gain": acc_gain, "pgr_gain": pgr_gain,
            "rule": f"{task}: the best generator's ({best[task]}) mean test accuracy or PGR minus none's, >= bar",
        }
        if runs:
            metric = "pgr" if pgr_gain is not None and pgr_gain >= acc_gain else "acc"
            out[f"augment_{task}_gain"]["interval"] = _gain_interval(runs, task, best[task], metric)
    return out


def _cell(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + ("" if interval is None else f" +-{(interval[1] - interval[0]) / 2:.3f}")


def print_augment(section: dict[str, Any], console: Console) -> None:
    """The augment table (means over seeds, +- half the 90% interval) and the checks (the targets print after)."""
    table = Table("task", "kind", "real rows", "synthetic", "acc", "PGR", "val acc", "acceptance", "agreement",
                  title=f"augment: {section['data']['domain']}, teacher {section['data']['teacher_acc']:.3f}, "
                  f"floor {section['data']['floor_acc']:.3f}")
    for row in section["rows"]:
        mark = " *" if section["best"].get(row["task"]) == row["kind"] else ""
        table.add_row(row["task"], row["kind"] + mark, str(row["pool"]), f"{row['synthetic']:.0f}",
                      _cell(row["acc"], row["acc_interval"]), _cell(row["pgr"], row["pgr_interval"]),
                      f"{row['validation_acc']:.3f}", _cell(row["acceptance"], None), _cell(row["agreement"], None))
    console.print(table)
    chosen = section["filter"]["chosen"]["threshold"]
    lines = [f"* best generator: {BEST_GENERATOR_RULE}",
             f"filter threshold chosen on validation: {chosen}; held-out checkers: {section['filter']['agreement']}"]
    lines += [f"gan ({task}): {reason}" for task, reason in section["gan_reason"].items()]
    console.print("\n".join(lines), highlight=False)
