"""Registering a feedback candidate and deciding between candidates, shared by the classifier and the
causal-LM pipelines: each candidate is saved as the next version of the champion's name, and the best
that passed its gate is promoted (the others rejected with their reasons)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fanbu.evaluate.speed import param_count
from fanbu.feedback.gate.promotion import GateDecision, apply_decision
from fanbu.feedback.gate.scores import ReportScores
from fanbu.feedback.shared.context import StrategyOutput
from fanbu.models.artefact import Provenance
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace
from fanbu.synthetic import register_synthetic, with_synthetic_share

# StrategyOutput.relation (a registry relation) -> the model card's base_model_relation (Hugging Face's
# four): merges and mixtures combine weights, everything else trains the champion further.
HF_RELATIONS: dict[str, str] = {
    "merge": "merge",
    "moe": "merge",
    "adapter": "adapter",
    "quantized": "quantized",
}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def register_candidate(
    workspace: Workspace,
    champion: ModelRecord,
    parents: list[str],
    name: str,
    config: Any,
    out: StrategyOutput,
    fingerprints: dict[str, str],
    seconds: float,
    recipe: dict[str, Any],
) -> ModelRecord:
    """Save a strategy's candidate as the next version of the champion's name, status ``candidate``."""
    provenance = Provenance(
        recipe={"strategy": name, "settings": config.model_dump(mode="json"), "feedback": recipe},
        parents=parents,
        data_fingerprints=fingerprints,
        base_model=champion.id,
        base_model_relation=HF_RELATIONS.get(out.relation, "finetune"),
        metrics=dict(out.metrics),
    )
    made_sets = getattr(out, "synthetic", [])  # LM strategies generate none
    datasets = [register_synthetic(workspace.registry, made).id for made in made_sets]
    if datasets:  # the card records how much of the training set was generated
        synthetic = sum(made.rows for made in made_sets)
        real = sum(entry["real"] for entry in out.details.get("augment", {}).values())
        provenance = with_synthetic_share(provenance, datasets, real, synthetic)
    return workspace.save_and_register(
        out.handle,
        provenance,
        name=champion.name,
        relation=out.relation,
        status="candidate",
        metadata={
            "strategy": name,
            "seconds": seconds,
            "metrics": _jsonable(out.metrics),
            "details": _jsonable(out.details),
            "params": param_count(out.handle.model),  # the report's size axis
        },
        datasets=datasets or None,
    )


def decide(
    registry: Registry,
    champion: ModelRecord,
    gated: list[tuple[ModelRecord, GateDecision]],
    fingerprints: dict[str, str],
    run_id: str,
    reports: dict[str, ReportScores] | None = None,
) -> str | None:
    """Reject every candidate but the best that passed, then promote that one; its id.

    The best has the highest mean **gate** score over the gated tasks; a tie goes to the earlier
    strategy. Each candidate's gate evaluations are recorded with split ``gate`` and the gate
    fingerprints, and its report (``reports``: candidate id -> its test scores, which the choice never
    reads) with split ``test`` and the test fingerprints.
    """
    passed = [(d.candidate_mean, r.id) for r, d in gated if d.promoted]
    best_mean, best = max(passed, key=lambda p: p[0]) if passed else (None, None)
    gates = {k.removesuffix("/gate"): v for k, v in fingerprints.items() if k.endswith("/gate")}
    tests = {k.removesuffix("/test"): v for k, v in fingerprints.items() if k.endswith("/test")}
    order = sorted(
        gated, key=lambda item: item[0].id == best
    )  # the winner last: the champion stays till then
    for record, decision in order:
        if decision.promoted and record.id != best:
            decision = dataclasses.replace(
                decision,
                promoted=False,
                reason=f"rejected: passed the gate, but {best} was promoted (mean gate {decision.metric} "
                f"{best_mean:.3f} vs {decision.candidate_mean:.3f}; a tie goes to the earlier strategy)",
            )
        apply_decision(
            registry,
            record,
            champion,
            decision,
            split="gate",
            fingerprints=gates,
            run_id=run_id,
            report=(reports or {}).get(record.id),
            report_fingerprints=tests,
        )
    return best
