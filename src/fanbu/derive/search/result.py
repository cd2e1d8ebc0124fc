"""What a search returns: one record per trial, the best candidate, and a table to print."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rich.table import Table

from fanbu.derive.prune import PruneConfig

TrialState = Literal["complete", "over_budget", "failed"]


@dataclass
class TrialRecord:
    """One candidate: its prune config, size, speed, score (None when not scored) and fate."""

    number: int
    params: dict[str, Any]
    n_params: int | None = None
    latency_ms: float | None = None
    score: float | None = None
    state: TrialState = "complete"
    reason: str = ""


@dataclass
class SearchResult:
    """The best feasible candidate and every trial, in the order they ran."""

    best: PruneConfig
    best_score: float
    trials: list[TrialRecord] = field(default_factory=list)
    searched: tuple[str, ...] = ("layers", "heads", "head_dim", "ffn", "vocab")
    warm_start: list[dict[str, Any]] = field(default_factory=list)  # architectures enqueued first

    def trials_to_reach(self, value: float) -> int | None:
        """How many distinct trials the search ran until one scored at least ``value`` (None: never)."""
        for index, trial in enumerate(self.trials, start=1):
            if trial.state == "complete" and trial.score is not None and trial.score >= value:
                return index
        return None

    @property
    def best_trial(self) -> TrialRecord:
        """The first complete trial with the best score."""
        complete = [t for t in self.trials if t.state == "complete" and t.score is not None]
        return max(complete, key=lambda t: (t.score, -t.number))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: best config, best score and all trials."""
        return {
            "best": self.best.model_dump(mode="json"),
            "best_score": self.best_score,
            "trials": [asdict(t) for t in self.trials],
            "warm_start": self.warm_start,
        }

    def table(self) -> Table:
        """A rich table of the trials; the best one in bold green, over-budget ones dimmed."""
        table = Table(title=f"architecture search: best score {self.best_score:.4f}")
        table.add_column("#", justify="right")
        for name in self.searched:
            table.add_column(name, justify="right")
        table.add_column("params", justify="right")
        table.add_column("latency ms", justify="right")
        table.add_column("score", justify="right")
        table.add_column("state")
        table.add_column("reason")
        best_number = self.best_trial.number
        for trial in self.trials:
            style = (
                "bold green" if trial.number == best_number else ("dim" if trial.state != "complete" else "")
            )
            table.add_row(
                str(trial.number),
                *(_show(trial.params.get(name)) for name in self.searched),
                "-" if trial.n_params is None else f"{trial.n_params:,}",
                "-" if trial.latency_ms is None else f"{trial.latency_ms:.2f}",
                "-" if trial.score is None else f"{trial.score:.4f}",
                trial.state,
                trial.reason,
                style=style,
            )
        return table


def _show(value: Any) -> str:
    """A compact cell: ``-`` for unset, short floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
