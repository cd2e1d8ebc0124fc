"""``fanbu bench lm``: the causal-LM loop on SmolLM2-135M and BBC News, one section after another.

- ``derive`` (:mod:`~fanbu.bench.lm.derive`): the teacher, the LoRA domain teacher, students at about 0.5
  and 0.25 of the parameters, a same-shape scratch student, and generation speed at batch 1;
- ``feedback`` (:mod:`~fanbu.bench.lm.feedback`): LoRA merges, multi-teacher KD and the sequential
  baseline, PGR in log-perplexity and the held-out perplexity change;
- ``serve`` (:mod:`~fanbu.bench.lm.serve`): time to first token and tokens/s of the derived small LM and
  the large one at concurrency 1 and 4, streaming, and the cascade's escalation rate.

Every section's targets go into one ``target`` table, with the whole bench's time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.lm.derive import lm_derive_settings, print_derive_rows, run_lm_derive
from fanbu.bench.lm.feedback import print_lm_feedback_table, run_lm_feedback_bench
from fanbu.bench.lm.serve import print_lm_serve_table, run_lm_serve_bench
from fanbu.errors import ConfigError
from fanbu.io import atomic_write_json
from fanbu.models.causal_lm import CausalLMHandle

SECTIONS = ("derive", "feedback", "serve")
SERVE_DOMAIN = "bbc-tech"  # whose student the serve section runs when the derive section did not
QUICK_SECONDS = 1800  # the bar: --quick within 30 minutes on 2 CPU cores


def _command(quick: bool, out: Path, sections: tuple[str, ...]) -> str:
    parts = ["fanbu bench lm", *(["--quick"] if quick else []), f"--out {out}"]
    parts += [f"--section {s}" for s in sections] if sections != SECTIONS else []
    return " ".join(parts)


def run_bench(
    quick: bool, out: Path, console: Console, sections: tuple[str, ...] = SECTIONS
) -> dict[str, Any]:
    """Run the chosen sections, print each table and write one JSON report to ``out``."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(f"--section {unknown or '(none)'}: choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    report: dict[str, Any] = {"bench": "lm", "quick": quick, "command": _command(quick, out, sections)}
    target: dict[str, Any] = {}
    kept: dict[str, CausalLMHandle] = {}
    if "derive" in sections:
        derive = run_lm_derive(lm_derive_settings(quick), console, keep=kept)
        print_derive_rows(derive, console)
        report["derive"] = derive.pop("derive")
        report["derive_section"] = derive
        target.update(derive["target"])
    if "feedback" in sections:
        section = run_lm_feedback_bench(quick, console)
        print_lm_feedback_table(section, console)
        report["feedback"] = section["feedback"]
        report["feedback_section"] = {k: v for k, v in section.items() if k not in ("feedback", "target")}
        target.update(section["target"])
    if "serve" in sections:
        small, large = _serve_models(kept, quick, console)
        serve = run_lm_serve_bench(small, large, quick, console)
        print_lm_serve_table(serve, console)
        target.update(serve.pop("target"))
        report["serve"] = serve
    seconds = time.perf_counter() - started
    if quick and sections == SECTIONS:
        target["quick_seconds"] = {"value": seconds, "bar": QUICK_SECONDS, "met": seconds <= QUICK_SECONDS}
    report["target"] = target
    report["seconds"] = seconds
    atomic_write_json(out, report)
    _print_targets(target, console)
    return report


def _serve_models(
    kept: dict[str, CausalLMHandle], quick: bool, console: Console
) -> tuple[CausalLMHandle, CausalLMHandle]:
    """The derive section's student (about half the teacher) and its teacher; derived here when the derive
    section did not run."""
    if "student_05" not in kept:
        console.print("[bold]lm serve[/]: deriving the student first (the derive section did not run)")
        settings = lm_derive_settings(quick)
        one = (settings.domains or [SERVE_DOMAIN])[:1]
        run_lm_derive(settings.model_copy(update={"domains": one, "exports": False}), console, keep=kept)
    return kept["student_05"], kept["teacher"]


def _print_targets(target: dict[str, Any], console: Console) -> None:
    for name, row in target.items():
        mark = "[green]met[/]" if row["met"] else "[red]short[/]"
        value = row["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        console.print(f"  {name}: {shown} (bar {row['bar']}) {mark}", highlight=False)
