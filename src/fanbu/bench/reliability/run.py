"""``fanbu bench reliability``: fuzzing, bad neighbours, kill -9 and sustained load, with targets.

The order: ``fanbu demo`` (smoke settings) makes the registry under test; the fuzzers run in-process
(the API through its OpenAPI schema, the loaders and the recipes); a real ``fanbu serve`` takes bad
requests next to good ones, then sustained load; ``fanbu serve``, ``fanbu derive`` and ``fanbu
feedback`` are killed at random moments and rerun, and ``fanbu doctor``'s diagnosis is counted.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from fanbu.bench.reliability.faults import kill_commands, kill_server, run_fanbu
from fanbu.bench.reliability.load import capacity, sustain
from fanbu.bench.reliability.neighbours import neighbours
from fanbu.bench.reliability.plan import ReliabilityPlan, demo_recipe, derive_recipe, feedback_recipe
from fanbu.bench.reliability.table import print_table
from fanbu.data.builtin import default_benchmark
from fanbu.errors import FanbuError
from fanbu.io import atomic_write_json
from fanbu.registry import Registry
from fanbu.registry.doctor import diagnose
from fanbu.serve.loadtest import start_server

#: doctor's problem kinds, by what the bench counts them as
CORRUPT = ("bad_fanbu_json", "wrong_id", "missing_weights", "weights_mismatch", "bad_manifest")
MISMATCH = ("missing_dir", "missing_parent", "moved_home")
LEFTOVER = ("staging_leftover", "orphan_dir")
LOAD_P95_DRIFT = 0.2  # last minute's p95 within 20% of the first minute's
LOAD_RSS_GROWTH_PCT = 5.0


def doctor_counts(home: Path) -> dict[str, int]:
    """``fanbu doctor``'s diagnosis of ``home`` now (no grace: whatever wrote there was killed)."""
    registry = Registry.open(home)
    try:
        report = diagnose(registry, grace=0.0)
    finally:
        registry.close()
    kinds = [p.kind for p in report.problems]
    return {
        "corrupt_artefacts": sum(k in CORRUPT for k in kinds),
        "registry_mismatches": sum(k in MISMATCH for k in kinds),
        "leftovers": sum(k in LEFTOVER for k in kinds),
    }


def run_bench(
    quick: bool,
    out: Path,
    console: Console,
    seed: int = 0,
    work: Path | None = None,
    validate_recipe: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Run every part, print the table, write the JSON (with ``target``) to ``out``.

    ``validate_recipe``: ``fanbu validate``'s function, which the recipe fuzzer drives (the command line
    passes :func:`fanbu.recipes.validate_file`; the benches may not import the recipes module).
    """
    if validate_recipe is None:
        raise ValueError("run_bench needs validate_recipe (fanbu.recipes.validate_file) for the recipe fuzzer")
    from fanbu.bench.reliability.fuzz import fuzz_all  # needs hypothesis and schemathesis (extra: dev)

    plan = ReliabilityPlan.make(quick)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-reliability-") as tmp:
        root = Path(work or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        home = root / "home"
        report: dict[str, Any] = {"bench": "reliability", "quick": quick, "seed": seed}
        report["setup_seconds"] = _setup(home, root)
        texts = _texts()
        token = secrets.token_urlsafe(24)
        console.print("[bold]fuzzing[/] the API, the loaders and the recipes")
        report["fuzz"] = fuzz_all(plan, home, token, seed, validate_recipe)
        registry = Registry.open(home)
        url = registry.url
        registry.close()
        server = start_server(home, plan.serve_overrides(), token, root / "serve.log")
        try:
            console.print("[bold]neighbours[/]: bad and good requests in the same batches")
            report["neighbours"] = {
                route: neighbours(server.url, token, route, texts, plan.neighbour_rounds, plan.max_text_chars)
                for route in (plan.model, plan.cascade)
            }
            console.print("[bold]sustained load[/] at 80% of the measured capacity, hostile requests mixed in")
            rps = capacity(server.url, token, plan.model, texts, plan.capacity_requests)
            report["load"] = {
                "capacity_rps": rps,
                "fraction": plan.load_fraction,
                **sustain(server.url, token, plan.model, texts, server.proc.pid, plan.load_fraction * rps,
                          plan.load_seconds, seed, plan.max_text_chars),
            }
        finally:
            server.stop()
        atomic_write_json(root / "partial.json", report)  # what is measured so far, if a later part fails
        console.print(f"[bold]faults[/]: {plan.kills} kill -9 each of fanbu serve, derive and feedback")
        faults = [kill_server(home, plan.serve_overrides(), token, url, plan.cascade, texts, root, plan.kills,
                              seed, lambda: doctor_counts(home))]
        for target, recipe in (("derive", derive_recipe()), ("feedback", feedback_recipe())):
            path = root / f"{target}.yaml"
            path.write_text(yaml.safe_dump(recipe, sort_keys=False))
            args = [target, str(path), "--home", str(home)]
            code, full = run_fanbu(args, root / f"{target}-full.log")
            if code != 0:
                raise FanbuError(f"fanbu {target} failed before any kill (exit {code}): see {root / f'{target}-full.log'}")
            faults.append({**kill_commands(target, args, root, plan.kills, full, lambda: doctor_counts(home),
                                           seed), "full_seconds": full})
            atomic_write_json(root / "partial.json", {**report, "faults": faults})
        report["faults"] = faults
    report["seconds"] = time.perf_counter() - started
    report["command"] = f"fanbu bench reliability{' --quick' if quick else ''} --out {out}"
    report["target"] = targets(report, plan)
    atomic_write_json(out, report)
    print_table(report, console)
    return report


def _setup(home: Path, root: Path) -> float:
    """``fanbu demo`` with the smoke settings into ``home``; its seconds."""
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(demo_recipe(), sort_keys=False))
    code, seconds = run_fanbu(["demo", "--recipe", str(path), "--home", str(home)], root / "demo.log")
    if code != 0:
        raise FanbuError(f"fanbu demo failed (exit {code}): see {root / 'demo.log'}")
    return seconds


def _texts() -> list[str]:
    """Good request texts: the comp domain's validation texts (any real text would do)."""
    bench = default_benchmark()
    texts = list(bench.domain("comp").validation.texts)[:200]
    if not texts:
        raise FanbuError("the built-in comp domain has no validation texts")
    return texts


def targets(report: dict[str, Any], plan: ReliabilityPlan) -> dict[str, dict[str, Any]]:
    """Each target ``{value, bar, met, rule}`` from the measured figures."""

    def target(value: float, bar: float, at_most: bool, rule: str) -> dict[str, Any]:
        return {"value": value, "bar": bar, "met": value <= bar if at_most else value >= bar, "rule": rule}

    fuzz, load = report["fuzz"], report["load"]
    first = max(load["p95_first_minute_ms"], 1e-9)
    bad_status = sum(v for k, v in load["status_counts"].items() if not (k.startswith(("2", "4"))))
    faults = report["faults"]
    out = {
        "fuzz_requests": target(fuzz["requests"], plan.fuzz_requests, False, "fuzzed API requests >= bar"),
        "fuzz_5xx": target(fuzz["responses_5xx"], 0, True, "5xx answers to fuzzed requests <= bar"),
        "fuzz_schema": target(fuzz["schema_violations"], 0, True, "answers not matching the OpenAPI schema <= bar"),
        "loader_cases": target(fuzz["loaders_cases"], plan.loader_cases, False, "fuzzed loader files >= bar"),
        "loader_tracebacks": target(fuzz["loader_tracebacks"], 0, True, "loader errors other than DomainError <= bar"),
        "recipe_cases": target(fuzz["recipe_cases"], plan.recipe_cases, False, "mutated recipes >= bar"),
        "recipe_tracebacks": target(fuzz["recipe_tracebacks"], 0, True, "recipe errors other than ConfigError <= bar"),
        "neighbours_good_failed": target(
            sum(n["good_failed"] for n in report["neighbours"].values()), 0, True,
            "good requests failed next to bad ones in the same batches, model and cascade, <= bar",
        ),
        "load_p95_drift": target(
            load["p95_last_minute_ms"] / first - 1, LOAD_P95_DRIFT, True,
            "p95 of the last minute / p95 of the first minute - 1, at 80% of capacity, <= bar",
        ),
        "load_rss_growth_pct": target(load["rss_growth_pct"], LOAD_RSS_GROWTH_PCT, True,
                                      "server resident memory growth over the load, %, <= bar"),
        "load_other_status": target(bad_status, 0, True, "answers other than 2xx/4xx (429 is a 4xx) <= bar"),
    }
    for fault in faults:
        name = fault["target"]
        out[f"faults_{name}_kills"] = target(fault["kills"], plan.kills, False, f"kill -9 of fanbu {name} >= bar")
        for key in ("lost_records", "corrupt_artefacts", "registry_mismatches"):
            out[f"faults_{name}_{key}"] = target(fault[key], 0, True, f"{key} after the kills and the rerun <= bar")
    if plan.quick:
        out["quick_seconds"] = target(report["seconds"], 1200.0, True, "--quick wall-clock seconds <= bar")
    return out
