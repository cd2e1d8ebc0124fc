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

import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.lm.derive import LMDeriveBenchSettings, lm_derive_settings, print_derive_rows, run_lm_derive
from fanbu.bench.lm.feedback import feedback_settings, print_lm_feedback_table, run_lm_feedback_bench
from fanbu.bench.lm.serve import print_lm_serve_table, run_lm_serve_bench
from fanbu.bench.stats import INTERVAL_METHOD, mean_interval
from fanbu.errors import ConfigError
from fanbu.io import atomic_write_json
from fanbu.models.causal_lm import CausalLMHandle

SECTIONS = ("derive", "feedback", "serve")
SERVE_DOMAIN = "bbc-tech"  # whose student the serve section runs when the derive section did not
QUICK_SECONDS = 1800  # the bar: --quick within 30 minutes on 2 CPU cores


#: Which way each target's bar points (True: the value must reach the bar; False: stay at or under it); the
#: targets over seeds are decided on their means with this.
HIGHER_IS_BETTER = {
    "student_05_vs_domain_teacher": False,
    "student_025_vs_domain_teacher": False,
    "scratch_vs_student_05": True,
    "scratch_vs_student_025": True,
    "student_speedup": True,
    "feedback_best_pgr": True,
    "feedback_best_heldout_ppl_change": False,
    "serve_streaming": True,
    "serve_ttft_p95_c4_ratio": False,
    "quick_seconds": False,
}


def _command(quick: bool, out: Path, sections: tuple[str, ...], seeds: int | None = None) -> str:
    parts = ["fanbu bench lm", *(["--quick"] if quick else []), *([f"--seeds {seeds}"] if seeds else [])]
    parts.append(f"--out {out}")
    parts += [f"--section {s}" for s in sections] if sections != SECTIONS else []
    return " ".join(parts)


def _one_draw(quick: bool, console: Console, sections: tuple[str, ...], seed: int | None) -> dict[str, Any]:
    """Every chosen section once (``seed``: the derive and feedback sections' seed; ``None``: their preset's)."""
    started = time.perf_counter()
    draw: dict[str, Any] = {} if seed is None else {"seed": seed}
    target: dict[str, Any] = {}
    kept: dict[str, CausalLMHandle] = {}
    derive_settings = lm_derive_settings(quick)
    if seed is not None:
        derive_settings = derive_settings.model_copy(update={"seed": seed})
    if "derive" in sections:
        derive = run_lm_derive(derive_settings, console, keep=kept)
        print_derive_rows(derive, console)
        draw["derive"] = derive.pop("derive")
        draw["derive_section"] = derive
        target.update(derive["target"])
    if "feedback" in sections:
        feedback = feedback_settings(quick)
        if seed is not None:
            feedback = feedback.model_copy(update={"seed": seed})
        section = run_lm_feedback_bench(quick, console, feedback)
        print_lm_feedback_table(section, console)
        draw["feedback"] = section["feedback"]
        draw["feedback_section"] = {k: v for k, v in section.items() if k not in ("feedback", "target")}
        target.update(section["target"])
    if "serve" in sections:
        small, large = _serve_models(kept, derive_settings, console)
        serve = run_lm_serve_bench(small, large, quick, console)
        print_lm_serve_table(serve, console)
        target.update(serve.pop("target"))
        draw["serve"] = serve
    seconds = time.perf_counter() - started
    if quick and sections == SECTIONS:
        target["quick_seconds"] = {"value": seconds, "bar": QUICK_SECONDS, "met": seconds <= QUICK_SECONDS}
    draw["target"] = target
    draw["seconds"] = seconds
    return draw


def over_seeds(targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target's mean over the draws, its 90% t-interval and its values; met on the mean, read with
    :data:`HIGHER_IS_BETTER`. A draw without a value (e.g. no feedback method passed) counts as not met."""
    found: dict[str, Any] = {}
    for name in targets[0]:
        if name not in HIGHER_IS_BETTER:
            raise ValueError(f"lm target {name!r} has no direction: add it to HIGHER_IS_BETTER")
        entries = [t.get(name) or {} for t in targets]
        values = [e.get("value") for e in entries]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        bar = entries[0].get("bar")
        if len(numbers) < len(values) or not numbers:
            mean, interval, met = (statistics.fmean(numbers) if numbers else None), None, False
        else:
            mean, interval = mean_interval(numbers)
            met = mean >= bar if HIGHER_IS_BETTER[name] else mean <= bar
        found[name] = {
            "value": mean,
            "bar": bar,
            "met": met,
            "interval": interval,
            "values": values,
            "rule": f"mean over {len(values)} draws {'>=' if HIGHER_IS_BETTER[name] else '<='} bar",
        }
    return found


def run_bench(
    quick: bool, out: Path, console: Console, sections: tuple[str, ...] = SECTIONS, seeds: int | None = None
) -> dict[str, Any]:
    """Run the chosen sections, print each table and write one JSON report to ``out``.

    ``seeds``: that many draws (derive and feedback seeded 0 .. seeds - 1), each in ``runs``; every target
    is then the mean over the draws with its 90% t-interval (``quick_seconds``: one draw's time). Without
    it, one draw at the presets' seeds, as before.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(f"--section {unknown or '(none)'}: choose from {', '.join(SECTIONS)}")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    started = time.perf_counter()
    report: dict[str, Any] = {"bench": "lm", "quick": quick, "command": _command(quick, out, sections, seeds)}
    if seeds is None:
        report.update(_one_draw(quick, console, sections, None))
    else:
        runs = []
        for seed in range(seeds):
            console.rule(f"lm draw {seed + 1} of {seeds}: seed {seed}")
            runs.append(_one_draw(quick, console, sections, seed))
        target = over_seeds([r["target"] for r in runs])
        report.update(
            {
                "seeds": seeds,
                "runs": runs,
                "target": target,
                "mean": {k: v["value"] for k, v in target.items()},
                "interval": {k: v["interval"] for k, v in target.items()},
                "interval_method": INTERVAL_METHOD,
            }
        )
    report["seconds"] = time.perf_counter() - started
    atomic_write_json(out, report)
    _print_targets(report["target"], console)
    return report


def _serve_models(
    kept: dict[str, CausalLMHandle], settings: LMDeriveBenchSettings, console: Console
) -> tuple[CausalLMHandle, CausalLMHandle]:
    """The derive section's student (about half the teacher) and its teacher; derived here when the derive
    section did not run."""
    if "student_05" not in kept:
        console.print("[bold]lm serve[/]: deriving the student first (the derive section did not run)")
        one = (settings.domains or [SERVE_DOMAIN])[:1]
        run_lm_derive(settings.model_copy(update={"domains": one, "exports": False}), console, keep=kept)
    return kept["student_05"], kept["teacher"]


def _print_targets(target: dict[str, Any], console: Console) -> None:
    for name, row in target.items():
        mark = "[green]met[/]" if row["met"] else "[red]short[/]"
        value = row["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        console.print(f"  {name}: {shown} (bar {row['bar']}) {mark}", highlight=False)
