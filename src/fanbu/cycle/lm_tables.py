"""The tables an LM cycle (and ``fanbu demo --lm``) prints: the small LMs derived, and what their traffic did."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_small_lms(console: Console, rows: list[dict[str, Any]], teacher: str) -> None:
    """One line per domain: the final small LM, its size and test perplexity (``run_lm_derive_recipe`` rows)."""
    table = Table("domain", "small LM", "params", "test ppl", title=f"small LMs derived from {teacher}")
    for row in rows:
        table.add_row(row["domain"], row["final"], f"{row['params']:,}", f"{row['test']['ppl']:.2f}")
    console.print(table)


def print_lm_traffic(console: Console, deployment: dict[str, Any]) -> None:
    """One line per domain: completions served, their mean simulated rating, the feedback sent, and what
    was collected."""
    table = Table(
        "domain",
        "served by",
        "completions",
        "mean rating (1-5)",
        "rated",
        "corrected",
        "escalated",
        title="small LMs served to simulated users",
    )
    for domain, seen in sorted(deployment["traffic"]["domains"].items()):
        rating = seen.get("mean_rating")
        table.add_row(
            domain,
            ", ".join(sorted(seen["models"])),
            str(seen["answered"]),
            "-" if rating is None else f"{rating:.2f}",
            str(seen["rated"]),
            str(seen["corrected"]),
            str(seen["escalated"]),
        )
    console.print(table)
    counts = deployment["collected"]["counts"]
    tiers = ", ".join(f"{tier} {n}" for tier, n in counts["tiers"].items())
    console.print(
        f"collected {deployment['collected']['dataset']}: {counts['kept']} pairs ({tiers})", highlight=False
    )
