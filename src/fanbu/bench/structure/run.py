"""``fanbu bench structure``: transfer that follows how domains relate, and rules that hold for the right reason.

- ``hierarchy`` (:mod:`~fanbu.bench.structure.hierarchy`): flat, hierarchical and group-alone adapters on
  the 20 Newsgroups tree at 8 and 32 labels per class;
- ``causal`` (:mod:`~fanbu.bench.structure.causal`): a planted spurious token in the experts' private
  slices; feedback without and with ``invariance``, the counterfactual test, and where the attribution
  report ranks the planted token;
- ``merge`` (:mod:`~fanbu.bench.structure.merge`): a swarm of full fine-tunes on 20 Newsgroups leaves merged
  back into large v0 flat or by level (``merge.levels``: each group's experts first).

Every section's targets go into one ``target`` table. ``quick_seconds`` times the issue's sections
(hierarchy and causal) when both ran; the merge section's own time is in ``merge_detail.seconds``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.structure.causal import CausalSettings, causal_settings, print_causal, run_causal
from fanbu.bench.structure.hierarchy import hierarchy_settings, print_hierarchy, run_hierarchy
from fanbu.bench.structure.merge import merge_settings, print_merge, run_merge
from fanbu.config import load_recipe
from fanbu.errors import ConfigError
from fanbu.io import atomic_write_json

SECTIONS = ("hierarchy", "causal", "merge")
TIMED = ("hierarchy", "causal")  # the bench, which the 30-minute bar is for; merge is timed on its own
QUICK_SECONDS = 1800  # the bar: --quick within 30 minutes on 2 CPU cores


def _command(quick: bool, out: Path, sections: tuple[str, ...], sets: list[str], seeds: int | None = None) -> str:
    parts = ["fanbu bench structure", *(["--quick"] if quick else []), *([f"--seeds {seeds}"] if seeds else [])]
    parts.append(f"--out {out}")
    parts += [f"--section {s}" for s in sections] if sections != SECTIONS else []
    parts += [f"--set {s}" for s in sets]
    return " ".join(parts)


def _section_sets(sets: list[str]) -> dict[str, list[str]]:
    """``hierarchy.seeds=5`` -> ``{"hierarchy": ["seeds=5"]}``: each override names its section."""
    out: dict[str, list[str]] = {s: [] for s in SECTIONS}
    for item in sets:
        section, _, rest = item.partition(".")
        if section not in SECTIONS or not rest:
            raise ConfigError(f"--set {item!r}: name the section first, e.g. hierarchy.seeds=5 or causal.seeds=3")
        out[section].append(rest)
    return out


def run_bench(
    quick: bool,
    out: Path,
    console: Console,
    sections: tuple[str, ...] = SECTIONS,
    sets: list[str] | None = None,
    seeds: int | None = None,
) -> dict[str, Any]:
    """Run the chosen sections, print each table and write one JSON report to ``out``.

    ``seeds`` sets every section's number of draws (``--set`` overrides still win); each section reports
    means with 90% t-intervals over its draws. With it, ``quick_seconds`` is the time of one draw (the timed
    sections' time over ``seeds``), so that the 30-minute bar still speaks of one quick run.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(f"--section {unknown or '(none)'}: choose from {', '.join(SECTIONS)}")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    sets = sets or []
    by_section = _section_sets([*(f"{s}.seeds={seeds}" for s in SECTIONS if seeds), *sets])
    started = time.perf_counter()
    report: dict[str, Any] = {
        "bench": "structure",
        "quick": quick,
        "command": _command(quick, out, sections, sets, seeds),
        **({"seeds": seeds} if seeds else {}),
    }
    target: dict[str, Any] = {}
    timed = 0.0
    if "hierarchy" in sections:
        began = time.perf_counter()
        found = run_hierarchy(hierarchy_settings(quick, by_section["hierarchy"]), log=console.print)
        print_hierarchy(found, console)
        report["hierarchy"] = found["hierarchy"]
        report["hierarchy_detail"] = {k: v for k, v in found.items() if k not in ("hierarchy", "target")}
        target.update(found["target"])
        timed += time.perf_counter() - began
    if "causal" in sections:
        began = time.perf_counter()
        base = causal_settings(quick).model_dump(mode="json")
        settings = load_recipe(CausalSettings, overrides=by_section["causal"], base=base)
        found = run_causal(settings, log=console.print)
        print_causal(found, console)
        report.update({k: found[k] for k in ("causal", "attribution")})
        report["causal_detail"] = {k: v for k, v in found.items() if k not in ("causal", "attribution", "target")}
        target.update(found["target"])
        timed += time.perf_counter() - began
    if "merge" in sections:
        found = run_merge(merge_settings(quick, by_section["merge"]), log=console.print)
        print_merge(found, console)
        report.update({k: found[k] for k in ("merge", "levels_vs_flat")})
        report["merge_detail"] = {k: v for k, v in found.items() if k not in ("merge", "levels_vs_flat")}
    seconds = time.perf_counter() - started
    if quick and set(TIMED) <= set(sections):
        per_draw = timed / seeds if seeds else timed
        target["quick_seconds"] = {
            "value": per_draw,
            "bar": QUICK_SECONDS,
            "met": per_draw <= QUICK_SECONDS,
            "rule": (
                f"seconds of the hierarchy and causal sections over {seeds} draws / {seeds}, <= bar"
                if seeds
                else "seconds of the hierarchy and causal sections at the quick preset's draws, <= bar"
            ),
        }
    report["target"] = target
    report["seconds"] = seconds
    atomic_write_json(out, report)
    for name, row in target.items():
        mark = "[green]met[/]" if row["met"] else "[red]short[/]"
        console.print(f"  {name}: {row['value']} (bar {row['bar']}) {mark}", highlight=False)
    return report
