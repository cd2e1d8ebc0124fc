"""What the report shows, read from the registry alone: models, evaluations, runs.

:func:`collect` takes one snapshot of the registry; the views below turn it into the numbers each
figure and table needs. Accuracies are the test-split evaluations a feedback run recorded (the gate
scores the champion and each candidate on every task; the run scores each expert on its domain).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from fanbu.errors import FanbuError
from fanbu.registry import EvaluationRecord, ModelRecord, Registry, RunRecord
from fanbu.registry.engine import describe_url


class ReportError(FanbuError):
    """The report cannot be built (an empty registry, an unwritable output)."""


@dataclass(frozen=True)
class Snapshot:
    """Everything the report reads from one registry."""

    source: str
    models: dict[str, ModelRecord]
    evaluations: list[EvaluationRecord]
    runs: list[RunRecord]


@dataclass
class FeedbackView:
    """One feedback run: its champion, experts and candidates, with test accuracy per task."""

    run: str
    generation: int | None
    champion: str
    domains: list[str]
    heldout: list[str]
    experts: dict[str, str]
    rows: list[dict[str, Any]]  # the run's strategy rows: name, model, pgr_mean, forgetting, gate
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> task -> test accuracy

    @property
    def tasks(self) -> list[str]:
        """The feedback domains, then the held-out tasks."""
        return [*self.domains, *self.heldout]


def collect(registry: Registry) -> Snapshot:
    """Read the registry; an empty one is an error that says how to fill it."""
    models = {m.id: m for m in registry.list_models()}
    source = describe_url(registry.url)
    if not models:
        raise ReportError(
            f"the registry {source} has no models; run `fanbu demo` first (or point --home / --db at a "
            "workspace that has them)"
        )
    return Snapshot(source, models, registry.evaluations(), registry.list_runs())


def generations(snapshot: Snapshot) -> dict[str, int]:
    """Feedback run id -> the cycle generation it belongs to (runs of ``fanbu cycle``)."""
    found = {}
    for run in snapshot.runs:
        if run.kind == "cycle" and run.status == "succeeded" and "feedback_run" in run.summary:
            found[run.summary["feedback_run"]] = int(run.summary["generation"])
    return found


def feedback_views(snapshot: Snapshot) -> list[FeedbackView]:
    """Every succeeded feedback run, oldest first, with the test accuracies it recorded."""
    by_run: dict[str, list[EvaluationRecord]] = defaultdict(list)
    for record in snapshot.evaluations:
        if record.split == "test" and record.metric == "accuracy" and record.run_id is not None:
            by_run[record.run_id].append(record)
    generation = generations(snapshot)
    views = []
    for run in snapshot.runs:
        summary = run.summary
        if run.kind != "feedback" or run.status != "succeeded" or "strategies" not in summary:
            continue
        experts = dict(summary.get("experts", {}))
        view = FeedbackView(
            run=run.id,
            generation=generation.get(run.id),
            champion=summary["champion"],
            domains=sorted(experts),
            heldout=list(summary.get("heldout", [])),
            experts=experts,
            rows=list(summary["strategies"]),
        )
        for record in by_run[run.id]:
            view.accuracy.setdefault(record.model_id, {})[record.domain] = record.value
        for domain, acc in summary.get("expert_acc", {}).items():  # runs from before experts were recorded
            view.accuracy.setdefault(experts[domain], {}).setdefault(domain, acc)
        views.append(view)
    return views


def params_of(snapshot: Snapshot) -> dict[str, float]:
    """Model id -> parameter count, from the model's metadata or a recorded ``params`` evaluation."""
    sizes = {mid: float(m.metadata["params"]) for mid, m in snapshot.models.items() if "params" in m.metadata}
    for record in snapshot.evaluations:
        if record.metric == "params":
            sizes.setdefault(record.model_id, record.value)
    return sizes


def latest_test_accuracy(snapshot: Snapshot) -> dict[str, dict[str, float]]:
    """Model id -> task -> the latest test accuracy recorded."""
    latest: dict[str, dict[str, float]] = defaultdict(dict)
    for record in sorted(snapshot.evaluations, key=lambda r: (r.created_at, r.id)):
        if record.split == "test" and record.metric == "accuracy":
            latest[record.model_id][record.domain] = record.value
    return dict(latest)


def large_names(snapshot: Snapshot, views: list[FeedbackView]) -> set[str]:
    """Names of the large model: every name that has been a champion."""
    names = {snapshot.models[v.champion].name for v in views if v.champion in snapshot.models}
    names |= {m.name for m in snapshot.models.values() if m.status == "champion"}
    return names


def size_points(snapshot: Snapshot, views: list[FeedbackView]) -> list[dict[str, Any]]:
    """Models with a size and a test accuracy: ``{id, params, accuracy, group}``.

    ``accuracy`` is the mean test accuracy over the tasks the model was scored on; ``group`` is
    ``large`` for versions of the large model, ``derived`` for the rest (experts, small models).
    """
    sizes, scores, large = params_of(snapshot), latest_test_accuracy(snapshot), large_names(snapshot, views)
    points = []
    for model_id, model in snapshot.models.items():
        if model_id in sizes and scores.get(model_id):
            points.append(
                {
                    "id": model_id,
                    "params": sizes[model_id],
                    "accuracy": statistics.fmean(scores[model_id].values()),
                    "group": "large" if model.name in large else "derived",
                    "status": model.status,
                }
            )
    return points
