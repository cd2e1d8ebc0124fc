"""The reliability bench's report as rich tables: the targets, then the faults per command."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_table(report: dict[str, Any], console: Console) -> None:
    """Every target (value, bar, met), then one row per killed command."""
    table = Table(title=f"fanbu bench reliability{' --quick' if report['quick'] else ''}")
    for column in ("target", "value", "bar", "met", "rule"):
        table.add_column(column, justify="right" if column in ("value", "bar") else "left")
    for name, t in report["target"].items():
        value = t["value"]
        shown = f"{value:.3f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"
        table.add_row(name, shown, f"{t['bar']:g}", "yes" if t["met"] else "[red]SHORT[/]", t["rule"])
    console.print(table)
    faults = Table(title="kill -9, then a rerun and fanbu doctor")
    for column in ("command", "kills", "lost records", "corrupt", "registry mismatches", "leftovers"):
        faults.add_column(column)
    for fault in report["faults"]:
        faults.add_row(
            fault["target"], str(fault["kills"]), str(fault["lost_records"]), str(fault["corrupt_artefacts"]),
            str(fault["registry_mismatches"]), str(fault["leftovers"]),
        )
    console.print(faults)
    load = report["load"]
    console.print(
        f"load: {load['rps']:.1f} req/s offered at {load['fraction']:.0%} of {load['capacity_rps']:.1f} for "
        f"{load['seconds']:.0f} s; p95 {load['p95_first_minute_ms']:.0f} -> {load['p95_last_minute_ms']:.0f} ms; "
        f"memory {load['rss_start_mb']:.0f} -> {load['rss_end_mb']:.0f} MB; statuses {load['status_counts']}"
    )
    console.print(f"{report['seconds']:.0f} s in all ({report['setup_seconds']:.0f} s of them fanbu demo)")
