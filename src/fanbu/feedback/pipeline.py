"""``fanbu feedback RECIPE.yaml``: run each strategy, register each candidate, gate them, promote the best.

The context carries the champion, the experts, the domains' public and validation slices and
unlabeled text: never a private slice, never a gate or test split. Every candidate is registered as the
next version of the champion's name (status ``candidate``, parents: the champion and the experts) and
gated against the champion on the **gate** split of every domain and held-out task; the best candidate
that passes (by its mean gate score) is promoted, the others are rejected with their reasons. The
**test** splits are scored only for the report (PGR, forgetting, their bootstrap intervals): nothing
that decides reads them. The registry records each evaluation with the split it was made on (``gate``
for the decision, ``test`` for the report), and the run summary the gate fingerprints each decision
read.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from fanbu.data.slices import benchmark_of, domain_names, pairs
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.errors import ConfigError
from fanbu.evaluate.speed import param_count
from fanbu.feedback.candidates import decide, register_candidate
from fanbu.feedback.gate.promotion import gate, score_champion
from fanbu.feedback.gate.scores import (
    ReportScores,
    bootstrap_intervals,
    expert_outcomes,
    score_candidate,
    score_report,
    score_tests,
)
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.feedback.shared.context import FeedbackContext, Labeled, get_strategy
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import UnknownModelError, Workspace


@dataclass
class FeedbackSlices:
    """What one feedback run reads from the benchmark: context data (public, validation), the gate
    splits the promotion decides on, and the test splits the report is scored on.

    ``fingerprints``: ``<task>/<split>`` -> the fingerprint of what was read (``gate``: of the capped
    sample the decision reads).
    """

    domains: list[str]
    heldout: list[str]
    public: dict[str, Labeled]
    validation: dict[str, Labeled]
    tests: dict[str, Labeled]
    gate: dict[str, Labeled] = field(default_factory=dict)
    unlabeled: list[str] = field(default_factory=list)
    collected: dict[str, list[str]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def split_fingerprints(self, split: str) -> dict[str, str]:
        """Task -> the fingerprint of its ``split`` (``gate``, ``test``, ``validation``, ``public``)."""
        suffix = f"/{split}"
        return {k.removesuffix(suffix): v for k, v in self.fingerprints.items() if k.endswith(suffix)}


def load_slices(recipe: FeedbackRecipe, champion: EncoderHandle) -> FeedbackSlices:
    """Public / validation slices of the feedback domains; gate and test splits of every head of the champion."""
    data = recipe.data
    bench = benchmark_of(data)
    domains = domain_names(data, bench)
    heads = sorted(champion.labels)
    missing = sorted(set(domains) - set(heads))
    if missing:
        raise ConfigError(
            f"the champion has no head for {missing} (heads: {heads}); add them before feeding back"
        )
    known = set(bench.names())
    heldout = [h for h in heads if h not in domains and h in known]
    if len(heldout) + len(domains) < len(heads) and recipe.gate.require_all_heads:
        raise ConfigError(
            f"the champion's heads {sorted(set(heads) - known)} have no data in the benchmark, so the gate "
            "cannot score them; add them under data.heldout_files, or set gate.require_all_heads: false"
        )
    for name in (*domains, *heldout):
        if list(bench.domain(name).label_names) != list(champion.labels[name]):
            raise ConfigError(
                f"head {name!r}: the champion's labels {champion.labels[name]} differ from the data's "
                f"{list(bench.domain(name).label_names)}; use the benchmark the champion was trained on"
            )
    slices = FeedbackSlices(domains, heldout, {}, {}, {})
    for name in domains:
        public, validation = bench.public(name), bench.validation(name)
        slices.public[name] = pairs(public, data.max_public, data.seed)
        slices.validation[name] = pairs(validation, data.max_validation, data.seed)
        slices.fingerprints[f"{name}/public"] = public.fingerprint
        slices.fingerprints[f"{name}/validation"] = validation.fingerprint
    for name in (*domains, *heldout):
        checked = bench.gate(name)
        if data.max_gate is not None:
            checked = checked.subsample(data.max_gate, data.seed)
        slices.gate[name] = pairs(checked, None, data.seed)
        slices.fingerprints[f"{name}/gate"] = checked.fingerprint
        test = bench.domain(name).test
        slices.tests[name] = pairs(test, data.max_test, 0)
        slices.fingerprints[f"{name}/test"] = test.fingerprint
    return slices


def add_collected(slices: FeedbackSlices, registry: Registry, name: str, champion: EncoderHandle) -> str:
    """Add a collected dataset: labelled rows to the domains' public data, unlabeled rows as served text.

    A feedback domain's unlabeled rows become what its small model met while serving
    (``ctx.collected``); other tasks' rows become domain-free unlabeled text.
    """
    from fanbu.collect.dataset import read_collected

    collected = read_collected(registry, name)
    for domain, (texts, labels) in sorted(collected.labeled.items()):
        if domain not in slices.domains:
            slices.unlabeled.extend(texts)  # another task's rows: their text still carries language
            continue
        index = {label: i for i, label in enumerate(champion.labels[domain])}
        names = collected.label_names[domain]
        unknown = sorted({names[y] for y in labels} - set(index))
        if unknown:
            raise ConfigError(
                f"collected dataset {collected.record.id}: {domain} labels {unknown} unknown to the champion"
            )
        old_texts, old_labels = slices.public[domain]
        slices.public[domain] = (old_texts + list(texts), old_labels + [index[names[y]] for y in labels])
    for domain, texts in sorted(collected.unlabeled.items()):
        if domain in slices.domains:
            slices.collected.setdefault(domain, []).extend(texts)
        else:
            slices.unlabeled.extend(texts)
    slices.fingerprints["collected"] = collected.record.fingerprint
    return collected.record.id


def load_champion(recipe: FeedbackRecipe, workspace: Workspace) -> tuple[EncoderHandle, ModelRecord]:
    """The champion handle and record (``champion`` is an id, or a name whose champion is taken)."""
    record = workspace.champion(recipe.champion)
    handle = workspace.load_encoder(record)
    if recipe.max_length is not None:
        handle.max_length = recipe.max_length
    handle.model.eval()
    return handle, record


def load_experts(
    recipe: FeedbackRecipe, workspace: Workspace, champion: ModelRecord, domains: list[str], max_length: int
) -> dict[str, tuple[EncoderHandle, str]]:
    """Domain -> (expert, its model id): derived now from the champion, or read from the registry."""
    settings = recipe.experts
    if settings.source == "registry":
        unknown = sorted(set(settings.models) - set(domains))
        missing = sorted(set(domains) - set(settings.models))
        if unknown or missing:
            raise ConfigError(f"experts.models: no model for {missing}, not a feedback domain: {unknown}")
        ids = {}
        for domain, spec in settings.models.items():
            try:
                ids[domain] = workspace.resolve(spec).id
            except UnknownModelError as exc:
                raise ConfigError(f"experts.models.{domain}: {exc}") from None
        if settings.check_lineage:
            check_lineage(workspace, champion, ids)
    else:
        derive = DeriveRecipe(
            teacher=champion.id,
            max_length=max_length,
            data=recipe.data.derive_data(domains, settings.derive.max_train),
            stages=settings.derive.stages,
            executor=settings.derive.executor,
        )
        ids = {row["domain"]: row["final"] for row in run_derive(derive, workspace.registry)}
    experts = {}
    for domain, model_id in sorted(ids.items()):
        handle = workspace.load_encoder(model_id)
        if recipe.max_length is not None:
            handle.max_length = recipe.max_length
        handle.model.eval()
        experts[domain] = (handle, model_id)
    return experts


def check_lineage(workspace: Workspace, champion: ModelRecord, ids: dict[str, str]) -> None:
    """Every expert must descend from ``champion`` or an earlier version of its name, else a ConfigError."""
    registry = workspace.registry
    line = {champion.id} | {a.id for a in registry.ancestors(champion.id) if a.name == champion.name}
    for domain, model_id in sorted(ids.items()):
        if model_id in line:
            continue
        ancestors = [a.id for a in registry.ancestors(model_id)]
        if not line & set(ancestors):
            raise ConfigError(
                f"experts.models.{domain}: {model_id} does not descend from {champion.id} or an earlier "
                f"version of {champion.name!r} (its ancestors: {ancestors or 'none'}); feed back models derived "
                f"from this champion's line, or set experts.check_lineage: false to accept it"
            )


def record_sizes_and_experts(
    registry: Registry,
    champion: EncoderHandle,
    champion_record: ModelRecord,
    experts: dict[str, tuple[EncoderHandle, str]],
    expert_acc: dict[str, float],
    slices: FeedbackSlices,
    run_id: str,
) -> None:
    """Record what the report reads: each expert's test accuracy on its domain, the champion's size.

    The expert's test accuracy is the report's (PGR's denominator); nothing decides on it.
    """
    for domain, (_, model_id) in sorted(experts.items()):
        registry.record_evaluation(
            model_id,
            domain=domain,
            split="test",
            metrics={"accuracy": expert_acc[domain]},
            dataset_fingerprint=slices.fingerprints.get(f"{domain}/test"),
            run_id=run_id,
        )
    if not any(e.metric == "params" for e in registry.evaluations(champion_record.id, domain="*")):
        registry.record_evaluation(
            champion_record.id,
            domain="*",
            split="size",
            metrics={"params": float(param_count(champion.model))},
        )



def run_feedback(recipe: FeedbackRecipe, registry: Registry) -> dict[str, Any]:
    """Run every strategy of the recipe, gate each candidate, promote the best; the run's summary.

    The decision (each candidate's gate verdict, and which passing candidate is the best) reads the
    gate splits only. The test splits are scored for the report rows (accuracy, PGR, forgetting and
    their intervals) once per model, after that candidate's gate verdict, and never reach the decision.
    """
    if recipe.task == "causal_lm":
        from fanbu.feedback.lm.pipeline import run_lm_feedback  # imports this module's registry steps

        return run_lm_feedback(recipe, registry)
    workspace = Workspace(registry)
    champion, champion_record = load_champion(recipe, workspace)
    slices = load_slices(recipe, champion)
    collected = None
    if recipe.data.collected is not None:
        collected = add_collected(slices, registry, recipe.data.collected, champion)
    strategies = recipe.parsed_strategies()
    dumped = recipe.model_dump(mode="json")
    gate_prints = slices.split_fingerprints("gate")
    with workspace.run("feedback", recipe) as run:
        run_dir = run.dir
        experts = load_experts(recipe, workspace, champion_record, slices.domains, champion.max_length)
        swarm = {d: handle for d, (handle, _) in experts.items()}
        parents = [champion_record.id, *(model_id for _, model_id in experts.values())]
        rows, gated, reports = [], [], {}
        # the decision: the champion's gate scores, once for every candidate
        champion_gate = score_champion(champion, slices.gate, recipe.gate)
        # the report: test scores of the experts and the champion, once; no decision reads them
        expert_acc, expert_right = expert_outcomes(swarm, slices.tests)
        record_sizes_and_experts(registry, champion, champion_record, experts, expert_acc, slices, run.id)
        champion_test = score_tests(champion, slices.tests, recipe.gate.batch_size)
        # one context for the run: its strategies share the experts' outputs and validation scores
        shared = FeedbackContext.for_run(champion, swarm, slices, run_dir, recipe.seed)
        for index, (name, config) in enumerate(strategies):
            ctx = dataclasses.replace(shared, work_dir=run_dir / f"{index}-{name}")
            started = time.perf_counter()
            out = get_strategy(name).run(ctx, config)
            seconds = time.perf_counter() - started
            record = register_candidate(
                workspace, champion_record, parents, name, config, out, slices.fingerprints, seconds, dumped
            )
            decision = gate(out.handle, champion, slices.gate, recipe.gate, champion_gate)
            gated.append((record, decision))
            # the report's scores of this candidate, after its verdict (a candidate that lost a head
            # has none)
            report = score_report(
                out.handle if decision.candidate_metrics else None,
                slices.tests,
                champion_test,
                recipe.gate.batch_size,
            )
            reports[record.id] = report
            rows.append(
                {
                    "name": name,
                    "model": record.id,
                    "seconds": seconds,
                    **report_row(report, expert_acc, expert_right, slices, recipe.seed),
                    "gate": {"promoted": decision.promoted, "reason": decision.reason},
                    "decision_split": "gate",
                    "decision": decision.summary(),
                    "decision_fingerprints": gate_prints,
                }
            )
        best = decide(registry, champion_record, gated, slices.fingerprints, run.id, reports)
        for row in rows:
            final = registry.get_model(row["model"])
            row["gate"] = {"status": final.status, "reason": final.reason, "passed": row["gate"]["promoted"]}
        summary = {
            "run": run.id,
            "champion": champion_record.id,
            "promoted": best,
            "experts": {d: model_id for d, (_, model_id) in experts.items()},
            "expert_acc": expert_acc,
            "heldout": slices.heldout,
            "collected": collected,
            "decision_split": "gate",
            "gate_fingerprints": gate_prints,
            "report_split": "test",
            "strategies": rows,
        }
        run.summary = summary
    return summary


def report_row(
    report: ReportScores,
    expert_acc: dict[str, float],
    expert_right: dict[str, str],
    slices: FeedbackSlices,
    seed: int,
) -> dict[str, Any]:
    """A candidate's report numbers from its test scores: accuracy and PGR per domain, forgetting, and
    their paired-bootstrap intervals (``report_split: test``; no decision reads them)."""
    row = score_candidate(
        report.candidate_metrics, report.champion_metrics, expert_acc, slices.domains, slices.heldout
    )
    if report.candidate_outcomes:  # a candidate that lost a head has no scores to resample
        row["interval"] = bootstrap_intervals(
            report.candidate_outcomes,
            report.champion_outcomes,
            expert_right,
            slices.domains,
            slices.heldout,
            seed=seed,
        )
    return {**row, "report_split": "test"}
