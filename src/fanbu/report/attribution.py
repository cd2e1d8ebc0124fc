"""The report's attribution pages: per domain, the swarm's general rules beside its candidate shortcuts.

Renders a consensus report (the JSON-able dict of :func:`fanbu.attribution.consensus_report`, kept in a
candidate's ``metadata.details.consensus`` by the ``invariance`` feedback option) as one section per
domain: which models read the head, the words every reader uses the same way, the words one reader
alone relies on, and the integrated gradients' convergence gap per reader. Text is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fanbu.registry import ModelRecord
from fanbu.report.page import esc, number, table

EXPLAIN = (
    "Scores: a reader's mean integrated-gradients attribution of the word towards the class, over the "
    "texts it assigns to that class, in units of its mean absolute word attribution (counts in brackets). "
    "General rules: every reader scores the word with the same sign, each at least the threshold. "
    "Shortcuts: one reader alone reaches the threshold; margin: its score minus the highest other reader's."
)


def _scores(entry: Mapping[str, Any], readers: list[str]) -> str:
    cells = []
    for reader in readers:
        score, count = entry["scores"].get(reader), entry["counts"].get(reader, 0)
        shown = "-" if score is None else f"{score:+.2f} ({count})"
        cells.append(f'<td class="num">{esc(shown)}</td>')
    return "".join(cells)


def domain_section(domain: str, lists: Mapping[str, Any]) -> str:
    """One domain's readers, rules and shortcuts as HTML."""
    readers = list(lists.get("readers", []))
    head = f"<p>Readers of the head <b>{esc(domain)}</b>: {esc(', '.join(readers) or 'none')}"
    head += f"; {esc(lists.get('texts', '?'))} texts attributed.</p>"
    if lists.get("note"):
        return head + f"<p>{esc(lists['note'])}</p>"
    rules = table(
        ["word", "class", "strength", *readers],
        (
            f"<td>{esc(e['word'])}</td><td>{esc(e['label'])}</td>{number(e['strength'], '.2f')}"
            + _scores(e, readers)
            for e in lists.get("rules", [])
        ),
    )
    shortcuts = table(
        ["rank", "word", "class", "relied on by", "margin", *readers],
        (
            f'<td class="num">{rank}</td><td>{esc(e["word"])}</td><td>{esc(e["label"])}</td>'
            f"<td>{esc(e['reader'])}</td>{number(e['margin'], '.2f')}" + _scores(e, readers)
            for rank, e in enumerate(lists.get("shortcuts", []), start=1)
        ),
    )
    deltas = table(
        ["reader", "mean |convergence delta|"],
        (f"<td>{esc(r)}</td>{number(d, '.4f')}" for r, d in sorted(lists.get("delta", {}).items())),
    )
    return (
        head
        + f"<h3>General rules (candidate causal rules)</h3>{rules}"
        + f"<h3>Shortcuts (one reader alone)</h3>{shortcuts}"
        + f"<h3>Integrated gradients' completeness</h3>{deltas}"
    )


def attribution_sections(report: Mapping[str, Any], title: str = "Attribution") -> list[tuple[str, str]]:
    """``(heading, html)`` sections, one per domain of a consensus report."""
    settings = report.get("settings", {})
    intro = f"<p>{esc(EXPLAIN)} Threshold {esc(settings.get('threshold', '?'))}, "
    intro += f"at least {esc(settings.get('min_count', '?'))} occurrences.</p>"
    return [
        (f"{title}: {domain}", intro + domain_section(domain, lists))
        for domain, lists in sorted(report.get("domains", {}).items())
    ]


def model_attribution_sections(models: Iterable[ModelRecord]) -> list[tuple[str, str]]:
    """The attribution sections of every model whose metadata carries a consensus report (newest first)."""
    sections: list[tuple[str, str]] = []
    for model in sorted(models, key=lambda m: m.created_at, reverse=True):
        report = (model.metadata.get("details") or {}).get("consensus")
        if isinstance(report, Mapping) and report.get("domains"):
            sections += attribution_sections(report, title=f"Attribution ({model.name} v{model.version})")
    return sections
