"""Matplotlib figures as inline SVG: text kept as text, no XML prolog, no namespace URLs.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no GUI backend). In an
HTML5 page an inline ``<svg>`` needs no ``xmlns`` attributes (the parser puts it in the SVG namespace),
so they are dropped with the prolog and the RDF metadata: the page names no URL at all.
"""

from __future__ import annotations

import io
import re

import matplotlib
from matplotlib.figure import Figure

STATUS_COLOURS: dict[str, str] = {
    "champion": "#2e7d32",
    "candidate": "#f9a825",
    "rejected": "#c62828",
    "archived": "#9e9e9e",
}
STATUS_NAMES: dict[str, str] = {"archived": "retired (archived)"}
_NAMESPACE = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def plain(text: object) -> str:
    """``text`` shown literally by matplotlib (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def new_figure(width: float, height: float) -> Figure:
    """A white figure of ``width`` x ``height`` inches with a constrained layout."""
    return Figure(figsize=(width, height), layout="constrained", facecolor="white")


def to_svg(figure: Figure, salt: str) -> str:
    """The figure as an inline ``<svg>`` element; ``salt`` keeps its element ids unique on the page."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        figure.savefig(
            buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
        )
    text = buffer.getvalue()
    start = text.index("<svg")
    head_end = text.index(">", start)
    head = _NAMESPACE.sub("", text[start:head_end])
    return head + text[head_end:]
