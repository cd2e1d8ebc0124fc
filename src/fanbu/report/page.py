"""The report page: one self-contained HTML file (inline CSS and SVG, no script, no URL).

Every piece of text that comes from the registry goes through :func:`html.escape`; the figures are
SVG that matplotlib escaped itself.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import fanbu
from fanbu.report.data import FeedbackView, Snapshot

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #263238; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #cfd8dc; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #cfd8dc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eceff1; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; overflow-x: auto; } figcaption { font-size: 0.85rem; color: #546e7a; }
figure svg { max-width: 100%; height: auto; }
.champion { color: #2e7d32; font-weight: 600; } .rejected { color: #c62828; } .candidate { color: #f9a825; }
.archived { color: #757575; }
"""


def esc(value: object) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def number(value: float | None, fmt: str) -> str:
    """A table cell for a number, ``-`` when missing; anything else a run summary holds there is shown
    escaped, as text."""
    if value is None:
        return '<td class="num">-</td>'
    try:
        shown = format(value, fmt)
    except (TypeError, ValueError):
        shown = str(value)
    return f'<td class="num">{esc(shown)}</td>'


def status_cell(status: str) -> str:
    """A table cell naming a status, coloured by it."""
    return f'<td class="{esc(status)}">{esc(status)}</td>'


def table(headers: Sequence[str], rows: Iterable[str]) -> str:
    """A table from escaped headers and rows already made of ``<td>`` cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def overview(snapshot: Snapshot) -> str:
    """Counts of models by status, runs by kind, and the current champions."""
    statuses = Counter(m.status for m in snapshot.models.values())
    kinds = Counter(r.kind for r in snapshot.runs)
    champions = ", ".join(m.id for m in snapshot.models.values() if m.status == "champion") or "none"
    items = [
        f"registry: <code>{esc(snapshot.source)}</code>",
        "models: " + esc(", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
        "runs: " + esc(", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"),
        f'current champion: <span class="champion">{esc(champions)}</span>',
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def cycle_table(snapshot: Snapshot) -> str:
    """One row per finished cycle generation, or a note that no cycle ran."""
    rows = []
    for run in snapshot.runs:
        s = run.summary
        if run.kind != "cycle" or run.status != "succeeded" or "generation" not in s:
            continue
        rows.append(
            f'<td>{esc(s.get("cycle", ""))}</td><td class="num">{esc(s["generation"])}</td>'
            f"<td>{esc(s['champion_in'])}</td><td>{esc(s['promoted'] or 'none')}</td>"
            f"<td>{esc(s['champion_out'])}</td><td>{esc(', '.join(sorted(s.get('small', {}).values())))}</td>"
            f"<td>{esc(s.get('feedback_run', ''))}</td>"
        )
    if not rows:
        return "<p>No <code>fanbu cycle</code> generation recorded.</p>"
    headers = (
        "cycle",
        "generation",
        "champion in",
        "promoted",
        "champion out",
        "small models",
        "feedback run",
    )
    return table(headers, rows)


def feedback_table(views: list[FeedbackView], statuses: dict[str, str]) -> str:
    """One row per candidate of every feedback run: PGR, forgetting, the gate's decision and its reason."""
    rows = []
    for view in views:
        for row in view.rows:
            gate = row.get("gate", {})
            decided = gate.get("status", "?")
            rows.append(
                f"<td>{esc('' if view.generation is None else view.generation)}</td><td>{esc(view.run)}</td>"
                f"<td>{esc(view.champion)}</td><td>{esc(row['name'])}</td><td>{esc(row['model'])}</td>"
                + number(row.get("pgr_mean"), ".3f")
                + number(row.get("forgetting"), "+.1f")
                + f"<td>{esc('passed' if gate.get('passed') else 'failed')}</td>"
                + status_cell(decided)
                + f"<td>{esc(gate.get('reason', ''))}</td>"
                + status_cell(statuses.get(row["model"], "?"))
            )
    if not rows:
        return "<p>No feedback run recorded.</p>"
    headers = (
        "generation",
        "run",
        "champion",
        "strategy",
        "candidate",
        "PGR mean",
        "forgetting (pts)",
        "gate",
        "decision",
        "reason",
        "status now",
    )
    return table(headers, rows)


def figure(anchor: str, svg: str, caption: str) -> str:
    """A ``<figure>`` holding an inline SVG and its escaped caption."""
    return f'<figure id="{esc(anchor)}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: escaped title, then each ``(heading, html)`` section."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f"<h2>{esc(heading)}</h2>{content}" for heading, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>fanbu {esc(fanbu.__version__)}, written {esc(stamp)}, from the registry alone.</p>"
        f"{body}</body></html>\n"
    )
