"""The tables ``fanbu bench loop`` prints: each generation's models, each mechanism's row, the targets."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.feedback.gate.scores import INTERVAL_LEGEND, format_score


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _pgr(row: dict[str, Any], key: str) -> str:
    """``row[key]`` (a PGR) with its bootstrap interval, in format_score's format."""
    span = (row.get("interval") or {}).get(key)
    return format_score({"pgr_mean": row.get(key), "interval": {"pgr_mean": span}}, "pgr_mean")


def print_generation(generation: dict[str, Any], console: Console) -> None:
    """Per domain: the champion before and after the generation, the small model before and after adapt
    (test accuracy, the report); per held-out task: the champion before and after."""
    table = Table(
        "task",
        "large before",
        "large after",
        "small before adapt",
        "small after adapt",
        "small served",
        title=f"generation {generation['generation']}: {generation['champion_in']} -> {generation['champion_out']}"
        f" ({generation['seconds']['total']:.0f} s)",
    )
    before, after = generation["large_before"], generation["large"]
    for domain, small in generation["small"].items():
        table.add_row(
            domain,
            _fmt(before[domain]),
            _fmt(after[domain]),
            _fmt(small["before_adapt"]),
            _fmt(small["after_adapt"]),
            small["served"],
        )
    for task, acc in before["heldout"].items():
        table.add_row(f"{task} (held out)", _fmt(acc), _fmt(after["heldout"].get(task)), "", "", "")
    console.print(table)


def print_mechanisms(draw: dict[str, Any], console: Console) -> None:
    """One row per generation and mechanism, then the full-size swarm: PGR against the small teachers,
    forgetting, seconds, bytes moved from the domains, parameters, the gate (bold: promoted)."""
    table = Table(title=f"fanbu bench loop, seed {draw['seed']}: mechanisms ({draw['seconds']:.0f} s)")
    for column in (
        "gen",
        "mechanism",
        "PGR small",
        "forgetting (pts)",
        "seconds",
        "bytes from domains",
        "params",
        "gate",
        "weak-to-strong",
    ):
        table.add_column(
            column, justify="left" if column in ("mechanism", "gate", "weak-to-strong") else "right"
        )
    for generation in draw["generations"]:
        for row in generation["mechanisms"]:
            if "error" in row:
                table.add_row(
                    str(generation["generation"]),
                    row["name"],
                    "",
                    "",
                    "",
                    "",
                    "",
                    f"[red]{row['error']}[/]",
                    "",
                )
                continue
            table.add_row(
                str(generation["generation"]),
                row["name"],
                _pgr(row, "pgr_small"),
                format_score(row, "forgetting"),
                f"{row['seconds']:.0f}",
                _bytes(row["bytes_from_domains"]),
                f"{row['params']:,}",
                row["gate"].get("status") or ("passed" if row["gate"]["passed"] else "rejected"),
                ", ".join(row["weak_to_strong"]),
                style="bold" if row.get("model") == generation["promoted"] else None,
            )
    full = draw.get("full_size_swarm")
    if full and "error" in full:
        table.add_row("1", "full-size swarm", "", "", "", "", "", f"[red]{full['error']}[/]", "")
    elif full:
        table.add_row(
            "1",
            "full-size swarm",
            _pgr(full, "pgr"),
            format_score(full, "forgetting"),
            f"{full['seconds']:.0f}",
            _bytes(full["bytes_from_domains"]),
            f"{full['params']:,}",
            "passed" if full["gate"]["passed"] else "rejected",
            ", ".join(full["weak_to_strong"]),
        )
    console.print(table)
    console.print(
        "PGR small: (candidate - champion) / (adapted small model - champion) on the test splits, mean of the "
        "domains with a gap (the full-size swarm: against its full-size experts); bold: promoted by the gate "
        f"(gate splits); {INTERVAL_LEGEND}",
        highlight=False,
    )
    stages = ", ".join(f"{k} {v:.0f}" for k, v in draw["stage_seconds"].items())
    console.print(f"seconds per stage: {stages}", highlight=False)


def print_over_draws(report: dict[str, Any], console: Console) -> None:
    """Each mechanism's figures as means over the draws with their 90% t-intervals."""
    mean, interval = report["mean"], report["interval"]
    table = Table(title=f"fanbu bench loop: mean over {len(report['seeds'])} draws (seeds {report['seeds']})")
    for column in (
        "mechanism",
        "PGR small",
        "forgetting (pts)",
        "seconds",
        "bytes from domains",
        "gate passed",
    ):
        table.add_column(column, justify="left" if column == "mechanism" else "right")

    def cell(key: str) -> str:
        span = interval.get(key)
        return _fmt(mean.get(key)) + ("" if span is None else f" [{span[0]:.3f}, {span[1]:.3f}]")

    for row in report["mechanisms"]:
        name = row["name"]
        table.add_row(
            name,
            cell(f"{name}.pgr_small"),
            cell(f"{name}.forgetting"),
            _fmt(mean.get(f"{name}.seconds"), 0),
            _bytes(mean.get(f"{name}.bytes_from_domains")),
            _fmt(mean.get(f"{name}.gate_passed"), 2),
        )
    console.print(table)
    console.print("\\[brackets]: 90% t-interval over the draws", highlight=False)


def print_targets(report: dict[str, Any], console: Console) -> None:
    """One line per target: value [interval], bar, met or SHORT."""
    lines = []
    for name, part in report["target"].items():
        if not isinstance(part, dict):
            continue
        span = part.get("interval")
        value = _fmt(part["value"], 4) + ("" if not span else f" [{span[0]:.4f}, {span[1]:.4f}]")
        bar = "-" if part.get("bar") is None else f"{part['bar']:g}"
        lines.append(
            f"target {name}: {value} (bar {bar}; {part['rule']}): {'met' if part['met'] else 'SHORT'}"
        )
    lines.append(f"targets: {'all met' if report['target']['met'] else 'not all met'}")
    console.print("\n".join(lines), highlight=False)
