"""The gate on returns: a candidate policy replaces the champion only if no training variant regresses.

Both policies play the ``gate`` split of episode seeds on every training variant (never the ``test``
seeds, which the report reads). A variant regresses when the candidate's mean return falls more than
``tolerance * |champion's return|`` below the champion's. The decision is a
:class:`~fanbu.feedback.gate.promotion.GateDecision` (metric ``return``), so
:func:`~fanbu.feedback.gate.promotion.apply_decision` records it in the registry like any other gate.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.gate.promotion import GateDecision, TaskResult, apply_decision
from fanbu.registry import ModelRecord
from fanbu.registry.workspace import Workspace
from fanbu.rl.evaluate import evaluate_policy
from fanbu.rl.policy import PolicyMLP
from fanbu.rl.variants import Variant

METRIC = "return"


class ReturnGateConfig(Strict):
    """When a candidate policy may replace the champion."""

    tolerance: float = Field(0.05, ge=0, le=1, description="How far, as a fraction of the champion's |return|, "
                             "any training variant's return may fall below the champion's.")
    variant_tolerance: dict[str, float] = Field(default_factory=dict,
                                                description="Per-variant tolerances that replace `tolerance`.")
    require_mean_not_worse: bool = Field(True, description="Also reject a candidate whose mean return over "
                                         "the variants is below the champion's.")
    episodes: int = Field(20, ge=1, description="Gate episodes per variant and policy.")


def gate_returns(candidate: Mapping[str, float], champion: Mapping[str, float],
                 config: ReturnGateConfig | None = None) -> GateDecision:
    """Decide on mean returns per variant (both mappings cover the same variants)."""
    config = config or ReturnGateConfig()
    if not champion:
        raise ConfigError("gate: no variants to gate on; pass the returns of every training variant")
    if set(candidate) != set(champion):
        raise ConfigError(f"gate: the candidate was scored on {sorted(candidate)} but the champion on "
                          f"{sorted(champion)}; score both on every training variant")
    unknown = sorted(set(config.variant_tolerance) - set(champion))
    if unknown:
        raise ConfigError(f"gate.variant_tolerance names {unknown}, which are not gated variants "
                          f"({sorted(champion)}); fix the names")
    results = {
        v: TaskResult(candidate[v], champion[v], config.variant_tolerance.get(v, config.tolerance) * abs(champion[v]))
        for v in sorted(champion)
    }
    cand_mean = statistics.fmean(r.candidate for r in results.values())
    champ_mean = statistics.fmean(r.champion for r in results.values())
    problems = [f"{v} return {r.candidate:.1f} vs champion {r.champion:.1f} ({r.delta:+.1f}, tolerance "
                f"{r.tolerance:.1f})" for v, r in sorted(results.items(), key=lambda item: item[1].delta)
                if not r.ok]
    if config.require_mean_not_worse and cand_mean < champ_mean - 1e-9:
        problems.append(f"mean return {cand_mean:.1f} below the champion's {champ_mean:.1f}")
    reason = ("rejected: " + "; ".join(problems)) if problems else (
        f"promoted: every training variant within tolerance of the champion on the gate episodes; mean return "
        f"{champ_mean:.1f} -> {cand_mean:.1f}")
    return GateDecision(
        not problems, reason, METRIC, results, cand_mean, champ_mean,
        {v: {METRIC: candidate[v]} for v in results}, {v: {METRIC: champion[v]} for v in results},
    )


def gate_policies(candidate: PolicyMLP, champion: PolicyMLP, variants: Sequence[Variant],
                  config: ReturnGateConfig | None = None, seed: int = 0) -> GateDecision:
    """Play both policies on the gate episodes of every training variant and decide."""
    config = config or ReturnGateConfig()
    scores = {
        label: {v.name: evaluate_policy(policy, v, config.episodes, split="gate", seed=seed).mean for v in variants}
        for label, policy in (("candidate", candidate), ("champion", champion))
    }
    return gate_returns(scores["candidate"], scores["champion"], config)


def promote_best(workspace: Workspace, champion: ModelRecord, champion_policy: PolicyMLP,
                 candidates: Mapping[str, tuple[ModelRecord, PolicyMLP]], variants: Sequence[Variant],
                 config: ReturnGateConfig | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Gate every candidate against the champion; promote the best that passes (highest mean gate return),
    reject the others, and record every decision in the registry. Per candidate: what was decided."""
    config = config or ReturnGateConfig()
    decisions = {m: gate_policies(p, champion_policy, variants, config, seed) for m, (_, p) in candidates.items()}
    passing = [m for m, d in decisions.items() if d.promoted]
    best = max(passing, key=lambda m: decisions[m].candidate_mean) if passing else None
    prints = {v.name: v.fingerprint for v in variants}
    out = {}
    for method in sorted(decisions, key=lambda m: m == best):  # the promotion last: the champion changes
        decision = decisions[method]
        if decision.promoted and method != best:
            decision = GateDecision(False, f"rejected: passed the gate, but {best} scored higher ({decision.reason})",
                                    decision.metric, decision.tasks, decision.candidate_mean,
                                    decision.champion_mean, decision.candidate_metrics, decision.champion_metrics)
        record = apply_decision(workspace.registry, candidates[method][0], champion, decision, fingerprints=prints)
        out[method] = {"id": record.id, "promoted": decision.promoted, "reason": decision.reason,
                       "status": record.status, "gate_mean": decision.candidate_mean,
                       "champion_gate_mean": decision.champion_mean}
    return out
