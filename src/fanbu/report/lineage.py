"""The lineage graph: models as boxes coloured by status, layered by depth, parent edges named by relation.

A model's depth is one more than its deepest parent's, so every edge points right: a base model, then
large v0, its derived models and experts, the candidates of a feedback step, and so on for each
generation. Within a layer, models sit near the mean height of their parents (one barycentre pass),
which keeps most edges short. Drawn with matplotlib; no graphviz.
"""

from __future__ import annotations

import statistics

from matplotlib.patches import Patch

from fanbu.registry import ModelRecord
from fanbu.report.svg import STATUS_COLOURS, STATUS_NAMES, new_figure, plain, to_svg

LIGHT_TEXT = {"champion", "rejected"}  # statuses whose dark fill needs white text


def layers(models: list[ModelRecord]) -> list[list[str]]:
    """Model ids by depth (roots first); ``models`` in registration order, parents before children."""
    depth: dict[str, int] = {}
    for model in models:
        known = [depth[p] for p in model.parents if p in depth]
        depth[model.id] = 1 + max(known) if known else 0
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for model in models:
        grouped[depth[model.id]].append(model.id)
    return grouped


def positions(models: list[ModelRecord]) -> dict[str, tuple[float, float]]:
    """Model id -> (x, y): x the depth, y the slot in its layer, layers centred on the widest."""
    by_id = {m.id: m for m in models}
    layered = layers(models)
    tallest = max(len(layer) for layer in layered)
    placed: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(layered):
        order = {model_id: index for index, model_id in enumerate(layer)}

        def centre(model_id: str, order: dict[str, int] = order) -> tuple[float, int]:
            ys = [placed[p][1] for p in by_id[model_id].parents if p in placed]
            return (statistics.fmean(ys) if ys else 0.0, order[model_id])

        ranked = sorted(layer, key=centre) if depth else layer
        offset = (tallest - len(ranked)) / 2
        for slot, model_id in enumerate(ranked):
            placed[model_id] = (float(depth), offset + slot)
    return placed


def lineage_figure(models: list[ModelRecord]) -> str:
    """The lineage graph of ``models`` as inline SVG."""
    placed = positions(models)
    depth = 1 + max(x for x, _ in placed.values())
    tallest = 1 + max(y for _, y in placed.values())
    figure = new_figure(2.4 * depth + 1.2, 0.36 * tallest + 1.4)
    axes = figure.add_subplot()
    axes.set_xlim(-0.6, depth - 0.4)
    axes.set_ylim(tallest - 0.4, -0.9)  # the first slot on top
    axes.axis("off")
    for model in models:
        x1, y1 = placed[model.id]
        for parent in model.parents:
            if parent not in placed:
                continue
            x0, y0 = placed[parent]
            axes.plot([x0, x1], [y0, y1], color="#78909c", linewidth=0.7, zorder=1)
            if model.relation:
                axes.text(
                    (x0 + x1) / 2,
                    (y0 + y1) / 2,
                    plain(model.relation),
                    fontsize=5.5,
                    color="#37474f",
                    ha="center",
                    va="center",
                    zorder=2,
                    bbox={
                        "boxstyle": "round,pad=0.1",
                        "facecolor": "white",
                        "edgecolor": "none",
                        "alpha": 0.8,
                    },
                )
    for model in models:
        x, y = placed[model.id]
        colour = STATUS_COLOURS.get(model.status, "#ffffff")
        axes.text(
            x,
            y,
            plain(model.id),
            fontsize=6.5,
            ha="center",
            va="center",
            zorder=3,
            color="white" if model.status in LIGHT_TEXT else "black",
            bbox={"boxstyle": "round,pad=0.3", "facecolor": colour, "edgecolor": "#263238", "linewidth": 0.5},
        )
    handles = [
        Patch(facecolor=c, edgecolor="#263238", label=STATUS_NAMES.get(s, s))
        for s, c in STATUS_COLOURS.items()
    ]
    axes.legend(
        handles=handles,
        loc="upper left",
        fontsize=7,
        ncols=len(handles),
        frameon=False,
        bbox_to_anchor=(0.0, 1.0),
    )
    return to_svg(figure, "lineage")
