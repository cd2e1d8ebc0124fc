"""One generation's feedback step in the loop bench: each mechanism makes a candidate, one gate decides.

:func:`fanbu.feedback.pipeline.run_feedback` gives every strategy of a run one context; the bench needs
two (with and without the generation's collected dataset, so that ``distill`` and ``data`` each show
their own contribution), and one decision over all the candidates, so it composes the pipeline's own
steps: load the champion and the slices, score the champion once, register each candidate, gate it
on the **gate** splits, score the report on the **test** splits after the verdict, and
:func:`~fanbu.feedback.pipeline.decide` promotes the best candidate that passed. The full-size swarm
runs the combined default on full-size experts for comparison only: it is gated and scored, never
registered, never promoted.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from fanbu.bench.loop.accounting import collected_bytes, mechanism_bytes, weight_bytes
from fanbu.bench.loop.plan import Mechanism
from fanbu.evaluate.speed import param_count
from fanbu.feedback.gate.promotion import gate, score_champion
from fanbu.feedback.gate.scores import ReportScores, expert_outcomes, score_report, score_tests
from fanbu.feedback.pipeline import (
    FeedbackSlices,
    add_collected,
    decide,
    load_champion,
    load_experts,
    load_slices,
    record_sizes_and_experts,
    register_candidate,
    report_row,
)
from fanbu.feedback.recipe import FeedbackRecipe, parse_strategies
from fanbu.feedback.shared.context import FeedbackContext, get_strategy
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace

Scores = tuple[dict[str, dict[str, float]], dict[str, str]]


@dataclass
class StepData:
    """What a generation's feedback step reads: the champion, its slices without and with the collected
    dataset, and the champion's gate and test scores (each computed once)."""

    recipe: FeedbackRecipe
    champion: EncoderHandle
    record: ModelRecord
    plain: FeedbackSlices
    collected: FeedbackSlices
    collected_bytes: int
    champion_gate: Scores
    champion_test: Scores

    def slices(self, collected: bool) -> FeedbackSlices:
        """The slices a mechanism's context carries."""
        return self.collected if collected else self.plain


def load_step(recipe: FeedbackRecipe, registry: Registry) -> StepData:
    """The champion of ``recipe``, its slices (a second copy with ``recipe.data.collected`` added) and scores."""
    workspace = Workspace(registry)
    champion, record = load_champion(recipe, workspace)
    plain = load_slices(recipe, champion)
    with_data = copy.deepcopy(plain)
    size = 0
    if recipe.data.collected is not None:
        add_collected(with_data, registry, recipe.data.collected, champion)
        size = collected_bytes(registry, recipe.data.collected)
    champion_gate = score_champion(champion, plain.gate, recipe.gate)
    champion_test = score_tests(champion, plain.tests, recipe.gate.batch_size)
    return StepData(recipe, champion, record, plain, with_data, size, champion_gate, champion_test)


def _row(
    mechanism: Mechanism,
    step: StepData,
    handle: EncoderHandle,
    decision: Any,
    report: ReportScores,
    experts: tuple[dict[str, float], dict[str, str]],
    seconds: float,
) -> dict[str, Any]:
    """A candidate's report row: PGR against ``experts`` (accuracy, outcomes), forgetting, gate verdict."""
    row = report_row(report, experts[0], experts[1], step.plain, step.recipe.seed)
    if row.get("interval"):
        row["interval"]["pgr_small"] = row["interval"].pop("pgr_mean")
    pgr = {d["name"]: d["pgr"] for d in row["domains"]}
    return {
        "name": mechanism.name,
        "strategy": mechanism.strategy_name,
        "collected": mechanism.collected,
        "seconds": seconds,
        "pgr_small": row.pop("pgr_mean"),
        **row,
        # a domain where the candidate ends above its teacher: weak-to-strong (PGR > 1)
        "weak_to_strong": sorted(d for d, value in pgr.items() if value is not None and value > 1),
        "test_accuracy": {t: m["accuracy"] for t, m in report.candidate_metrics.items()},
        "params": param_count(handle.model),
        "decision_split": "gate",
        "decision": decision.summary(),
    }


@dataclass
class _Run:
    """What every candidate of one feedback run shares."""

    workspace: Workspace
    parents: list[str]
    logged: dict[str, Any]
    contexts: dict[bool, FeedbackContext]
    experts: tuple[dict[str, float], dict[str, str]]


def _candidate(
    shared: _Run, step: StepData, mechanism: Mechanism, index: int, console: Console
) -> tuple[dict[str, Any], tuple[ModelRecord, Any, ReportScores] | None]:
    """One mechanism's candidate, registered, gated and scored: its row and (record, decision, report)."""
    console.print(f"[bold]{mechanism.name}[/]: {mechanism.summary}", highlight=False)
    name, config = parse_strategies([mechanism.strategy])[0]
    base = shared.contexts[mechanism.collected]
    ctx = dataclasses.replace(base, work_dir=base.work_dir / f"{index}-{mechanism.name}")
    started = time.perf_counter()
    try:
        out = get_strategy(name).run(ctx, config)
    except Exception as exc:  # noqa: BLE001 - a failing mechanism is reported, the others still run
        error = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]{mechanism.name} failed[/]: {error}", highlight=False)
        return {"name": mechanism.name, "strategy": name, "error": error}, None
    seconds = time.perf_counter() - started
    fingerprints = step.slices(mechanism.collected).fingerprints
    record = register_candidate(
        shared.workspace, step.record, shared.parents, name, config, out, fingerprints, seconds, shared.logged
    )
    recipe = step.recipe
    decision = gate(out.handle, step.champion, step.plain.gate, recipe.gate, step.champion_gate)
    scored = out.handle if decision.candidate_metrics else None  # a candidate that lost a head: no scores
    report = score_report(scored, step.plain.tests, step.champion_test, recipe.gate.batch_size)
    row = _row(mechanism, step, out.handle, decision, report, shared.experts, seconds)
    parts = mechanism_bytes(
        name, config, out.details, ctx, step.collected_bytes if mechanism.collected else None
    )
    row.update(model=record.id, bytes_from_domains=parts.pop("total"), bytes=parts)
    row["gate"] = {"passed": decision.promoted, "reason": decision.reason}
    return row, (record, decision, report)


def run_step(
    step: StepData, registry: Registry, mechanisms: tuple[Mechanism, ...], console: Console
) -> dict[str, Any]:
    """Every mechanism's candidate, gated and scored; the best that passed is promoted.

    Returns ``rows`` (one per mechanism, with ``pgr_small`` against the swarm's test accuracy),
    ``promoted`` (a model id or ``None``), ``experts`` (the swarm's test accuracy and outcomes), the
    feedback run's id and ``outcomes``: per mechanism, its per-text test outcomes (for the paired
    bootstrap; not in the JSON).
    """
    workspace = Workspace(registry)
    recipe = step.recipe
    logged = {
        **recipe.model_dump(mode="json"),
        "mechanisms": [
            {"name": m.name, "strategy": m.strategy, "collected": m.collected} for m in mechanisms
        ],
    }
    with workspace.run("feedback", logged) as run:
        experts = load_experts(recipe, workspace, step.record, step.plain.domains, step.champion.max_length)
        swarm = {d: handle for d, (handle, _) in experts.items()}
        expert_scores = expert_outcomes(swarm, step.plain.tests)
        record_sizes_and_experts(
            registry, step.champion, step.record, experts, expert_scores[0], step.plain, run.id
        )
        shared = _Run(
            workspace,
            [step.record.id, *(model_id for _, model_id in experts.values())],
            logged,
            {
                flag: FeedbackContext.for_run(step.champion, swarm, step.slices(flag), run.dir, recipe.seed)
                for flag in (False, True)
            },
            expert_scores,
        )
        rows, made = [], []
        for index, mechanism in enumerate(mechanisms):
            row, candidate = _candidate(shared, step, mechanism, index, console)
            rows.append(row)
            if candidate is not None:
                made.append(candidate)
        gated = [(record, decision) for record, decision, _ in made]
        reports = {record.id: report for record, _, report in made}
        promoted = decide(registry, step.record, gated, step.plain.fingerprints, run.id, reports)
        for row in rows:
            if "model" in row:
                final = registry.get_model(row["model"])
                row["gate"] = {
                    "passed": row["gate"]["passed"],
                    "status": final.status,
                    "reason": final.reason,
                }
        run.summary = {
            "champion": step.record.id,
            "promoted": promoted,
            "decision_split": "gate",
            "report_split": "test",
            "rows": [
                {k: r.get(k) for k in ("name", "model", "pgr_small", "forgetting", "gate")} for r in rows
            ],
        }
    outcomes = {row["name"]: reports[row["model"]].candidate_outcomes for row in rows if "model" in row}
    return {"run": run.id, "rows": rows, "promoted": promoted, "experts": expert_scores, "outcomes": outcomes}


def full_size_swarm(
    step: StepData, recipe: FeedbackRecipe, registry: Registry, mechanism: Mechanism, console: Console
) -> dict[str, Any]:
    """``mechanism`` (the combined default) on full-size experts derived now by ``recipe.experts``.

    For comparison only: the candidate is gated and scored like the others but neither registered nor
    promoted. PGR is measured against the full-size experts' test accuracy; ``bytes_from_domains`` counts
    their weights (and the collected dataset when the mechanism's context carries it).
    """
    workspace = Workspace(registry)
    started = time.perf_counter()
    with workspace.run("bench-loop-full-size", recipe) as run:
        experts = load_experts(recipe, workspace, step.record, step.plain.domains, step.champion.max_length)
        made = time.perf_counter() - started
        swarm = {d: handle for d, (handle, _) in experts.items()}
        expert_scores = expert_outcomes(swarm, step.plain.tests)
        ctx = FeedbackContext.for_run(
            step.champion, swarm, step.slices(mechanism.collected), run.dir, recipe.seed
        )
        name, config = parse_strategies([mechanism.strategy])[0]
        console.print(f"[bold]full-size swarm[/]: {mechanism.name} from {len(swarm)} full-size experts")
        began = time.perf_counter()
        out = get_strategy(name).run(ctx, config)
        seconds = time.perf_counter() - began
        decision = gate(out.handle, step.champion, step.plain.gate, recipe.gate, step.champion_gate)
        report = score_report(
            out.handle if decision.candidate_metrics else None, step.plain.tests, step.champion_test
        )
        row = _row(mechanism, step, out.handle, decision, report, expert_scores, seconds)
        parts = {"weights": weight_bytes(swarm)}
        if mechanism.collected:
            parts["collected"] = step.collected_bytes
        if row.get("interval"):
            row["interval"]["pgr"] = row["interval"].pop("pgr_small")
        row.update(
            pgr=row.pop("pgr_small"),
            experts={d: model_id for d, (_, model_id) in experts.items()},
            expert_acc=expert_scores[0],
            bytes_from_domains=sum(parts.values()),
            bytes=parts,
            gate={
                "passed": decision.promoted,
                "reason": decision.reason,
                "status": "not registered (comparison)",
            },
            seconds_experts=made,
        )
        run.summary = {k: row[k] for k in ("pgr", "forgetting", "bytes_from_domains", "experts")}
    return row
