"""One draw of the loop bench: large v0, then generations of derive -> serve, collect, adapt -> feed back -> gate.

Each generation starts from the current champion, as ``fanbu cycle`` does: it derives the small models
from it (reused when the champion did not change), serves them to a fresh block of each domain's
private texts no model trained on through a real server (a share of the answers corrected through
``/v1/feedback``), collects, adapts, and feeds the adapted swarm back through every mechanism
(:mod:`fanbu.bench.loop.step`); the gate's choice is the next generation's champion. The first
generation also runs the full-size swarm for comparison.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from fanbu.bench.feedback import SETUP_CODE
from fanbu.bench.loop.plan import LoopPlan
from fanbu.bench.loop.step import StepData, full_size_swarm, load_step, run_step
from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.cycle.deploy import deploy_and_adapt
from fanbu.cycle.tables import print_adapted, print_small
from fanbu.data.slices import benchmark_of, domain_names, split_pairs, traffic_pairs
from fanbu.derive.pipeline import run_derive
from fanbu.feedback.gate.scores import expert_outcomes
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from fanbu.train.large import train_large_v0

ROUTES = "loop"  # names the generations' served routes and collected datasets (loop-g0, ...)


class LargeV0(Protocol):
    """Registers large v0 in ``registry`` as the champion and returns its id (the tests pass a tiny one)."""

    def __call__(
        self, registry: Registry, plan: LoopPlan, store: WorkDir, seed: int, console: Console
    ) -> str: ...


def register_large_v0(registry: Registry, plan: LoopPlan, store: WorkDir, seed: int, console: Console) -> str:
    """Large v0 trained on the public slices of every task (kept in ``store``), registered as champion."""
    data = plan.recipe.data
    bench = benchmark_of(data)
    tasks = bench.names()  # the feedback domains, then the held-out tasks
    public = split_pairs(bench, "public", tasks, plan.large_public, data.seed)
    validation = split_pairs(bench, "validation", tasks, data.max_validation, data.seed)
    max_length = plan.recipe.max_length or 128
    train = plan.large_train.model_copy(update={"seed": seed})

    def make() -> EncoderHandle:
        console.print(f"[bold]large v0[/]: {plan.model} on the public slices of {', '.join(tasks)}")
        handle = EncoderHandle.from_source(plan.model, max_length=max_length)
        train_large_v0(handle, bench, public, train, validation, head_seed=seed)
        return handle

    made_with = {
        "model": plan.model,
        "seed": seed,
        "train": train.model_dump(mode="json"),
        "public": plan.large_public,
        "data": data.model_dump(mode="json", include={"source", "seed", "public_fraction", "max_validation"}),
        "max_length": max_length,
        "code": source_fingerprint(*SETUP_CODE),
    }
    handle = store.model(f"loop-large-v0-seed{seed}", make, max_length, made_with)
    workspace = Workspace(registry)
    provenance = Provenance(
        recipe=made_with,
        parents=[workspace.register_source(plan.model)],  # the package model, an archived root
        data_fingerprints={t: bench.public(t).fingerprint for t in tasks},
        base_model=plan.model.removeprefix("package:"),
        base_model_relation="finetune",
    )
    record = workspace.save_and_register(
        handle, provenance, name="large", relation="finetune", status="champion"
    )
    return record.id


@dataclass
class Outcomes:
    """One generation's per-text test outcomes: each mechanism's candidate, the champion, the swarm."""

    domains: list[str]
    candidates: dict[str, dict[str, str]]
    champion: dict[str, str]
    experts: dict[str, str]


@dataclass
class Draw:
    """What a draw keeps between generations."""

    generations: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcomes] = field(default_factory=list)


def accuracies(metrics: dict[str, float], domains: list[str], heldout: list[str]) -> dict[str, Any]:
    """``{domain: acc, ..., heldout: {task: acc}}`` from test accuracy per task."""
    return {**{d: metrics[d] for d in domains}, "heldout": {t: metrics[t] for t in heldout if t in metrics}}


def small_scores(
    registry: Registry,
    derived: dict[str, str],
    deployment: dict[str, Any],
    after: dict[str, float],
    step: StepData,
) -> dict[str, dict[str, Any]]:
    """Test accuracy of each domain's small model as derived and as served after adapt (its fp32 handle,
    the teacher the feedback step reads), and of an adapted version validation turned down; the report's.

    ``after``: the served models' test accuracy (the feedback step scored them).
    """
    workspace = Workspace(registry)
    served = deployment["adapted"]
    made = {d: run["model"] for d, run in deployment["adapt"].items()}

    def score(models: dict[str, str]) -> dict[str, float]:
        handles = {d: workspace.load_encoder(m) for d, m in models.items()}
        for handle in handles.values():
            handle.max_length = step.champion.max_length
        return expert_outcomes(handles, step.plain.tests)[0] if handles else {}

    before = score({d: m for d, m in derived.items() if served[d] != m})
    turned_down = score({d: m for d, m in made.items() if served[d] != m})
    return {
        d: {
            "before_adapt": before.get(d, after[d]),
            "after_adapt": after[d],
            "derived": derived[d],
            "served": served[d],
            "adapted": served[d] != derived[d],
            **({"turned_down": {"model": made[d], "accuracy": turned_down[d]}} if d in turned_down else {}),
        }
        for d in sorted(derived)
    }


def derive_small(
    plan: LoopPlan, registry: Registry, champion: str, previous: dict[str, Any] | None, console: Console
) -> dict[str, str]:
    """Domain -> the small model derived from ``champion`` (the previous generation's when it started from
    the same champion: the same derivation would give the same models)."""
    if previous is not None and previous["champion_in"] == champion:
        console.print(f"small models of {champion} reused from generation {previous['generation']}")
        return {d: s["derived"] for d, s in previous["small"].items()}
    recipe = plan.recipe
    max_length = recipe.max_length or Workspace(registry).load_encoder(champion).max_length
    rows = run_derive(recipe.derive_recipe(champion, max_length), registry)
    print_small(console, rows, champion)
    return {row["domain"]: row["final"] for row in rows}


def _deployment(deployment: dict[str, Any], step: StepData) -> dict[str, Any]:
    return {
        "traffic": deployment.get("traffic"),
        "collected": deployment["collected"],
        "collected_bytes": step.collected_bytes,
        "skipped": deployment["skipped"],
        "adapt_validation": {d: r["validation_accuracy"] for d, r in deployment["adapt"].items()},
    }


def run_generation(
    plan: LoopPlan, registry: Registry, draw: Draw, champion: str, console: Console
) -> dict[str, Any]:
    """One generation from ``champion``; appends its summary and outcomes to ``draw`` and returns the summary."""
    recipe, generation = plan.recipe, len(draw.generations)
    console.rule(f"[bold]generation {generation + 1}[/] from {champion}")
    started = time.perf_counter()
    derived = derive_small(
        plan, registry, champion, draw.generations[-1] if draw.generations else None, console
    )
    seconds = {"derive": time.perf_counter() - started}
    began = time.perf_counter()
    deployment = deploy_and_adapt(
        recipe.deployment,
        recipe.data,
        recipe.derive.max_train,
        registry,
        ROUTES,
        generation,
        champion,
        derived,
        recipe.seed + generation,
        console,
    )
    print_adapted(console, deployment)
    seconds["serve_collect_adapt"] = time.perf_counter() - began
    seconds["traffic"] = float((deployment.get("traffic") or {}).get("seconds", 0.0))
    seconds["adapt"] = sum(float(r.get("seconds", 0.0)) for r in deployment["adapt"].values())
    dataset = deployment["collected"]["dataset"]
    began = time.perf_counter()
    step = load_step(
        recipe.feedback_recipe(champion, generation, dict(deployment["adapted"]), dataset), registry
    )
    seconds["feedback_setup"] = time.perf_counter() - began
    began = time.perf_counter()
    result = run_step(step, registry, plan.mechanisms, console)
    seconds["feedback"] = time.perf_counter() - began
    small = small_scores(registry, derived, deployment, result["experts"][0], step)
    chosen = next((r for r in result["rows"] if r.get("model") == result["promoted"]), None)
    champion_test = {t: m["accuracy"] for t, m in step.champion_test[0].items()}
    domains, heldout = step.plain.domains, step.plain.heldout
    summary: dict[str, Any] = {
        "generation": generation + 1,
        "champion_in": champion,
        "champion_out": result["promoted"] or champion,
        "promoted": result["promoted"],
        "promoted_mechanism": None if chosen is None else chosen["name"],
        "large_before": accuracies(champion_test, domains, heldout),
        # the champion the generation ends with: the promoted candidate, else the one it started from
        "large": accuracies(chosen["test_accuracy"] if chosen else champion_test, domains, heldout),
        "small": small,
        "small_mean": {
            k: statistics.fmean(s[k] for s in small.values()) for k in ("before_adapt", "after_adapt")
        },
        "deployment": _deployment(deployment, step),
        "mechanisms": result["rows"],
        "feedback_run": result["run"],
        "decision_split": "gate",
        "report_split": "test",
        "gate_fingerprints": step.plain.split_fingerprints("gate"),
    }
    if generation == 0 and plan.full_size:
        began = time.perf_counter()
        full = recipe.feedback_recipe(champion, generation, None, dataset)  # experts: full-size, derived now
        try:
            summary["full_size_swarm"] = full_size_swarm(step, full, registry, plan.mechanisms[0], console)
        except Exception as exc:  # noqa: BLE001 - the comparison failing leaves the loop's numbers standing
            console.print(f"[red]full-size swarm failed[/]: {type(exc).__name__}: {exc}", highlight=False)
            summary["full_size_swarm"] = {"error": f"{type(exc).__name__}: {exc}"}
        seconds["full_size_swarm"] = time.perf_counter() - began
    summary["seconds"] = {**seconds, "total": time.perf_counter() - started}
    draw.generations.append(summary)
    draw.outcomes.append(Outcomes(domains, result["outcomes"], step.champion_test[1], result["experts"][1]))
    return summary


def check_traffic(plan: LoopPlan) -> None:
    """Fail before anything is trained when a domain's private slice cannot give every generation a fresh
    traffic block beyond the training cap (``traffic_pairs`` raises the ConfigError that says what to lower)."""
    recipe = plan.recipe
    bench = benchmark_of(recipe.data)
    for domain in domain_names(recipe.data, bench):
        last = plan.generations - 1
        size = recipe.deployment.traffic_size
        traffic_pairs(bench.private(domain), recipe.derive.max_train, recipe.data.seed, size, last)


def run_generations(
    plan: LoopPlan, home: Path, store: WorkDir, seed: int, console: Console, large_v0: LargeV0
) -> tuple[dict[str, Any], Draw]:
    """Large v0 and ``plan.generations`` generations in a fresh registry at ``home``."""
    check_traffic(plan)
    registry = Registry.open(home)
    draw = Draw()
    try:
        started = time.perf_counter()
        champion = large_v0(registry, plan, store, seed, console)
        made = {"model": champion, "seconds": time.perf_counter() - started}
        for _ in range(plan.generations):
            champion = run_generation(plan, registry, draw, champion, console)["champion_out"]
    finally:
        registry.close()
    return made, draw
