"""The tables ``fanbu cycle`` and ``fanbu demo`` print: small models derived, and a feedback step's candidates."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.feedback.gate.scores import INTERVAL_LEGEND, format_score


def print_small(console: Console, rows: list[dict[str, Any]], teacher: str | None = None) -> None:
    """One line per domain: the final small model, its size and test scores (``run_derive`` rows)."""
    table = Table(
        "domain",
        "small model",
        "params",
        "test accuracy",
        "macro-F1",
        title=None if teacher is None else f"small models derived from {teacher}",
    )
    for row in rows:
        table.add_row(
            row["domain"],
            row["final"],
            f"{row['params']:,}",
            f"{row['test']['accuracy']:.3f}",
            f"{row['test']['macro_f1']:.3f}",
        )
    console.print(table)


def print_adapted(console: Console, deployment: dict[str, Any]) -> None:
    """One line per domain: its traffic, what was collected, and the small model before and after adapt
    (validation accuracy: a training-time figure, not a test result)."""
    table = Table(
        "domain",
        "served",
        "online acc",
        "corrected",
        "collected (human/pseudo/hard)",
        "adapted model",
        "val acc before -> after",
        title="small models served, collected, adapted",
    )
    traffic = (deployment.get("traffic") or {}).get("domains", {})
    counts = deployment["collected"]["counts"]["domains"]
    for domain, model in sorted(deployment["adapted"].items()):
        seen = traffic.get(domain, {})
        tiers = counts.get(domain, {})
        run = deployment["adapt"].get(domain)
        kept = domain in deployment["skipped"]
        accuracy = run["validation_accuracy"] if run else None
        table.add_row(
            domain,
            str(seen.get("answered", "-")),
            "-" if seen.get("accuracy") is None else f"{seen['accuracy']:.3f}",
            str(seen.get("corrected", "-")),
            "/".join(str(tiers.get(t, 0)) for t in ("human", "pseudo", "hard")),
            f"{model} (kept)" if kept else model,
            "-" if accuracy is None else f"{accuracy['before']:.3f} -> {accuracy['after']:.3f}",
        )
    console.print(table)


def print_feedback(console: Console, summary: dict[str, Any], title: str | None = None) -> None:
    """One line per strategy of a ``run_feedback`` summary: candidate, PGR, forgetting, gate; then the outcome."""
    table = Table("strategy", "candidate", "PGR mean", "forgetting (pts)", "seconds", "gate", title=title)
    for row in summary["strategies"]:
        table.add_row(
            row["name"],
            row["model"],
            format_score(row, "pgr_mean"),
            format_score(row, "forgetting"),
            f"{row['seconds']:.0f}",
            _decision(row["gate"]),
        )
    console.print(table)
    if any(row.get("interval") for row in summary["strategies"]):
        console.print(INTERVAL_LEGEND)
    promoted = summary["promoted"]
    console.print(
        f"{promoted} is the new champion" if promoted else f"{summary['champion']} stays champion",
        highlight=False,
    )


def _decision(gate: dict[str, Any]) -> str:
    """``status: reason``, the status not repeated when the reason opens with it (``rejected: ...``)."""
    status, reason = str(gate["status"]), str(gate["reason"])
    return reason if reason.startswith(f"{status}:") else f"{status}: {reason}"
