"""``fanbu report``: one self-contained HTML page built from the registry (models, evaluations, runs).

It shows the lineage graph, each feedback run's test accuracy per task (champion, experts, every
strategy's candidate), size against accuracy for the large versions and the derived models, and a
table of the feedback runs with PGR, forgetting and the gate's decision.
"""

from __future__ import annotations

from pathlib import Path

from fanbu.io import atomic_write_text
from fanbu.registry import Registry
from fanbu.report.attribution import model_attribution_sections
from fanbu.report.data import ReportError, collect, feedback_views, size_points
from fanbu.report.figures import accuracy_figure, size_figure
from fanbu.report.lineage import lineage_figure
from fanbu.report.page import cycle_table, feedback_table, figure, overview, page

__all__ = ["ReportError", "build_report", "write_report"]


def build_report(registry: Registry) -> str:
    """The report's HTML for ``registry``; :class:`ReportError` if it holds no model."""
    snapshot = collect(registry)
    views = feedback_views(snapshot)
    statuses = {model_id: m.status for model_id, m in snapshot.models.items()}
    sections = [
        ("Overview", overview(snapshot)),
        (
            "Lineage",
            figure(
                "fig-lineage",
                lineage_figure(list(snapshot.models.values())),
                "Every registered model, coloured by status, parents on the left; each edge is named by the "
                "child's relation to that parent (finetune, pruned, distilled, quantized, merge, ...).",
            ),
        ),
        (
            "Feedback: test accuracy per task",
            figure(
                "fig-accuracy",
                accuracy_figure(views, statuses),
                "For each feedback run: the champion it started from, each domain's expert on its own domain, "
                "and the candidate of every strategy, on the test split of every domain and held-out task "
                "(scored for the report after the gate decided on the gate splits).",
            ),
        ),
        (
            "Size against accuracy",
            figure(
                "fig-size",
                size_figure(size_points(snapshot, views)),
                "Parameters (log scale) against mean test accuracy over the tasks each model was scored on; "
                "squares: versions of the large model, circles: derived models (experts, small models).",
            ),
        ),
        ("Feedback runs", feedback_table(views, statuses)),
        ("Cycle generations", cycle_table(snapshot)),
    ]
    sections += model_attribution_sections(snapshot.models.values())  # invariance candidates' consensus reports
    return page("fanbu report", sections)


def write_report(registry: Registry, out: str | Path) -> Path:
    """Build the report and write it to ``out`` atomically; the path written."""
    text = build_report(registry)
    target = Path(out)
    if target.is_dir():
        raise ReportError(f"{target} is a directory; pass a file name such as {target / 'report.html'}")
    try:
        return atomic_write_text(target, text)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {target}: {exc} (choose another --out)") from None
