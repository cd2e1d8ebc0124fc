"""The report's plots: test accuracy per task of champion, experts and candidates; size against accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes

from fanbu.report.data import FeedbackView
from fanbu.report.svg import STATUS_COLOURS, STATUS_NAMES, new_figure, plain, to_svg

CHAMPION_COLOUR, EXPERT_COLOUR = "#455a64", "#1565c0"
CANDIDATE_COLOURS = ("#ef6c00", "#8e24aa", "#00897b", "#c0ca33", "#6d4c41", "#d81b60", "#3949ab", "#7cb342")


def _empty(message: str, salt: str) -> str:
    figure = new_figure(8, 1.2)
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=10)
    return to_svg(figure, salt)


def _series(view: FeedbackView, statuses: dict[str, str]) -> list[tuple[str, str, dict[str, float]]]:
    """(label, colour, task -> accuracy) for the champion, the experts and each candidate."""
    champion = view.accuracy.get(view.champion, {})
    experts = {d: view.accuracy.get(m, {}).get(d) for d, m in view.experts.items()}
    series = [
        (plain(f"{view.champion} (champion in)"), CHAMPION_COLOUR, champion),
        ("expert of the domain", EXPERT_COLOUR, {d: a for d, a in experts.items() if a is not None}),
    ]
    for index, row in enumerate(view.rows):
        status = statuses.get(row["model"], row["gate"].get("status", "?"))
        label = f"{row['name']} -> {row['model']} ({status})"
        series.append(
            (
                plain(label),
                CANDIDATE_COLOURS[index % len(CANDIDATE_COLOURS)],
                view.accuracy.get(row["model"], {}),
            )
        )
    return series


def _bars(axes: Axes, view: FeedbackView, statuses: dict[str, str]) -> None:
    tasks = view.tasks
    series = _series(view, statuses)
    width = 0.84 / len(series)
    positions = np.arange(len(tasks))  # (tasks,)
    for index, (label, colour, values) in enumerate(series):
        shown = [i for i, task in enumerate(tasks) if task in values]
        offsets = positions[shown] - 0.42 + width * (index + 0.5)
        axes.bar(offsets, [values[tasks[i]] for i in shown], width, label=label, color=colour)
    axes.set_xticks(
        positions,
        [plain(t) + (" (held out)" if t in view.heldout else "") for t in tasks],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("test accuracy")
    generation = "" if view.generation is None else f"generation {view.generation}, "
    axes.set_title(plain(f"{generation}feedback run {view.run}: champion {view.champion}"), fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def accuracy_figure(views: list[FeedbackView], statuses: dict[str, str]) -> str:
    """Grouped bars per feedback run: each task's test accuracy for champion, experts and candidates."""
    if not views:
        return _empty(
            "no feedback run recorded yet: run `fanbu demo`, `fanbu feedback` or `fanbu cycle`", "accuracy"
        )
    width = max(9.0, 1.1 * max(len(v.tasks) for v in views) + 4)
    figure = new_figure(width, 3.4 * len(views))
    for axes, view in zip(figure.subplots(len(views), 1, squeeze=False)[:, 0], views, strict=True):
        _bars(axes, view, statuses)
    return to_svg(figure, "accuracy")


def size_figure(points: list[dict[str, Any]]) -> str:
    """Parameters (log scale) against mean test accuracy: large versions and derived models, by status."""
    if not points:
        return _empty("no model has both a size and a test accuracy in the registry yet", "size")
    figure = new_figure(9, 5)
    axes = figure.add_subplot()
    for group, marker in (("large", "s"), ("derived", "o")):
        chosen = [p for p in points if p["group"] == group]
        if not chosen:
            continue
        axes.scatter(
            [p["params"] for p in chosen],
            [p["accuracy"] for p in chosen],
            marker=marker,
            s=46,
            c=[STATUS_COLOURS.get(p["status"], "#000000") for p in chosen],
            edgecolors="black",
            linewidths=0.5,
        )
        for point in chosen:
            axes.annotate(
                plain(point["id"]),
                (point["params"], point["accuracy"]),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=6,
            )
    for label, marker in (("large versions", "s"), ("derived models", "o")):
        axes.scatter([], [], marker=marker, c="white", edgecolors="black", linewidths=0.5, label=label)
    for status, colour in STATUS_COLOURS.items():
        axes.scatter(
            [],
            [],
            c=colour,
            marker="o",
            label=STATUS_NAMES.get(status, status),
            edgecolors="black",
            linewidths=0.5,
        )
    axes.set_xscale("log")
    axes.margins(x=0.15, y=0.06)  # room for the labels of the outermost points
    axes.set_xlabel("parameters (log scale)")
    axes.set_ylabel("mean test accuracy over the tasks it was scored on")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return to_svg(figure, "size")
