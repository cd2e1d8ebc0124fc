"""Rows, targets and the table of the ``ssl`` section.

``ssl[*]``: per label count and objective, the mean over domains of the test accuracy without and with
pretraining, their difference per seed (``gain``, with a 90% t-interval over seeds), the same on the
validation split, and each domain's mean gain. The headline objective of a label count is the one with
the higher mean *validation* gain.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.stats import mean_interval

LOW_BAR = 0.01  # at least 1 point of mean accuracy at 100 labels per domain
FULL_BAR = 0.0  # no loss at full labels
CHOICE_RULE = ("per label count, the objective with the higher mean validation gain over no pretraining "
               "(domains and seeds); the test split is not read for it")


def _domain_mean(rows: Sequence[dict[str, Any]], labels: Any, key: str, split: str) -> float:
    return statistics.fmean(r["scores"][key][split] for r in rows if r["labels"] == labels)


def summarise(runs: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (label count, objective), averaged over domains and then seeds."""
    counts = list(dict.fromkeys(r["labels"] for r in runs[0]["rows"]))
    domains = list(dict.fromkeys(r["domain"] for r in runs[0]["rows"]))
    out = []
    for labels in counts:
        for objective in objectives:
            without = [_domain_mean(run["rows"], labels, "none", "test_acc") for run in runs]
            with_ssl = [_domain_mean(run["rows"], labels, objective, "test_acc") for run in runs]
            gains = [w - b for w, b in zip(with_ssl, without, strict=True)]
            val_gains = [_domain_mean(run["rows"], labels, objective, "validation_acc")
                         - _domain_mean(run["rows"], labels, "none", "validation_acc") for run in runs]
            per_domain = {
                d: statistics.fmean(r["scores"][objective]["test_acc"] - r["scores"]["none"]["test_acc"]
                                    for run in runs for r in run["rows"] if r["domain"] == d and r["labels"] == labels)
                for d in domains
            }
            mean_without, without_interval = mean_interval(without)
            mean_with, with_interval = mean_interval(with_ssl)
            gain, gain_interval = mean_interval(gains)
            val_gain, val_interval = mean_interval(val_gains)
            out.append({
                "setting": "domain", "labels": labels, "objective": objective,
                "without_ssl": mean_without, "without_ssl_interval": without_interval,
                "with_ssl": mean_with, "with_ssl_interval": with_interval,
                "gain": gain, "gain_interval": gain_interval,
                "validation_gain": val_gain, "validation_gain_interval": val_interval,
                "gain_by_domain": per_domain, "seeds": len(runs),
            })
    return out


def chosen(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Label count -> its headline objective (see :data:`CHOICE_RULE`)."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = str(row["labels"])
        if key not in best or row["validation_gain"] > best[key]["validation_gain"]:
            best[key] = row
    return {key: row["objective"] for key, row in best.items()}


def targets(rows: Sequence[dict[str, Any]], low: int) -> dict[str, dict[str, Any]]:
    """The issue's SSL targets, read on the chosen objective's mean test gain."""
    picked = chosen(rows)
    out = {}
    for key, bar, name, what in ((str(low), LOW_BAR, "ssl_low_labels", f"{low} labels per domain"),
                                 ("full", FULL_BAR, "ssl_full_labels", "the full private slice")):
        if key not in picked:
            continue
        row = next(r for r in rows if str(r["labels"]) == key and r["objective"] == picked[key])
        out[name] = {"value": row["gain"], "interval": row["gain_interval"], "bar": bar,
                     "met": row["gain"] >= bar, "objective": picked[key],
                     "rule": f"mean test accuracy with ssl ({picked[key]}, chosen on validation) minus without, "
                     f"over domains then seeds, at {what}, >= bar"}
    return out


def _pct(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:+.3f}" if interval is None else f"{value:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"
    return text


def print_ssl(section: dict[str, Any], console: Console) -> None:
    """The section's table: one row per label count and objective."""
    table = Table(title="self-supervised pretraining on the domain's unlabeled text (mean of domains, test)")
    for column in ("labels", "objective", "without ssl", "with ssl", "gain [90%]", "validation gain", "chosen"):
        table.add_column(column)
    picked = chosen(section["rows"])
    for row in section["rows"]:
        table.add_row(str(row["labels"]), row["objective"], f"{row['without_ssl']:.3f}", f"{row['with_ssl']:.3f}",
                      _pct(row["gain"], row["gain_interval"]), _pct(row["validation_gain"]),
                      "yes" if picked[str(row["labels"])] == row["objective"] else "")
    console.print(table)
