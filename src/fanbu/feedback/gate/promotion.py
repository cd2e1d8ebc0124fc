"""The gate: a candidate large model is promoted only if no domain and no held-out task regresses.

:func:`gate` scores the candidate and the champion on every task's **gate** split
(``Benchmark.gate``: carved from the validation split, disjoint from what training-time choices read)
and decides; :func:`apply_decision` writes the decision into the registry (statuses, reason, the gate
evaluations with split ``gate``, and the report's test evaluations with split ``test`` when given);
:func:`rollback` restores the previous champion. The test split is never passed to :func:`gate`: it is
scored for the report only (:mod:`fanbu.feedback.gate.scores`), after the decision. A promoted
candidate's predecessor is archived with the reason ``superseded by <candidate id>``: that link is how
:func:`rollback` finds it again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError, RegistryError
from fanbu.feedback.gate.scores import ReportScores
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import ModelRecord, Registry
from fanbu.train.classify import score_heads

SUPERSEDED_BY = "superseded by "


class GateConfig(Strict):
    """When a candidate may replace the champion."""

    tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="How far (a fraction: 0.01 = one point) any task may fall below the champion.",
    )
    task_tolerance: dict[str, float] = Field(
        default_factory=dict, description="Per-task tolerances that replace `tolerance` for those tasks."
    )
    metric: Literal["accuracy", "macro_f1"] = Field("accuracy", description="The score compared per task.")
    rule: Literal["paired", "point"] = Field(
        "paired",
        description="paired: a task regresses only when the paired per-text evidence says its drop exceeds the "
        "tolerance (the upper one-sided confidence bound of candidate - champion is below -tolerance), so a "
        "small gate split's noise does not reject; point: the observed drop alone decides. Both converge as "
        "gate splits grow; the mean check stays a point comparison over every task.",
    )
    confidence: float = Field(
        0.9, gt=0.5, lt=1, description="The paired rule's one-sided confidence that a task's drop is real."
    )
    require_mean_not_worse: bool = Field(
        True, description="Also reject a candidate whose mean score over the tasks is below the champion's."
    )
    require_all_heads: bool = Field(
        True, description="Every head of the champion (domain or held-out task) must have a gate split."
    )
    batch_size: int = Field(64, ge=1, description="Batch size of the gate's (and the report's) predictions.")

    @model_validator(mode="after")
    def _paired_needs_accuracy(self) -> GateConfig:
        if self.rule == "paired" and self.metric != "accuracy":
            raise ValueError(
                f"rule 'paired' bounds the accuracy difference from per-text outcomes, not {self.metric}; "
                "set metric: accuracy or rule: point"
            )
        return self

    def tolerance_for(self, task: str) -> float:
        """The tolerance of ``task``."""
        return self.task_tolerance.get(task, self.tolerance)


@dataclass(frozen=True)
class TaskResult:
    """One task's score on both models."""

    candidate: float
    champion: float
    tolerance: float
    upper: float | None = None  # the paired rule's upper confidence bound of the delta; None: point rule

    @property
    def delta(self) -> float:
        """Candidate minus champion."""
        return self.candidate - self.champion

    @property
    def ok(self) -> bool:
        """Whether the candidate stays within the tolerance of the champion (by the bound, when paired)."""
        evidence = self.delta if self.upper is None else self.upper
        return evidence >= -self.tolerance - 1e-9


def paired_upper_bound(candidate: str, champion: str, confidence: float) -> float:
    """Upper one-sided confidence bound of the accuracy difference from per-text outcomes ("1"/"0").

    Each text gives a paired difference in {-1, 0, 1}; the bound is mean + z * standard error (the normal
    approximation McNemar's test rests on). Texts both models get right or wrong add no noise.
    """
    if len(candidate) != len(champion) or not candidate:
        raise ConfigError(f"gate: paired outcomes differ in length ({len(candidate)} vs {len(champion)})")
    diffs = [int(a) - int(b) for a, b in zip(candidate, champion, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    return mean + NormalDist().inv_cdf(confidence) * math.sqrt(variance / n)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, the per-task scores behind it and every metric measured."""

    promoted: bool
    reason: str
    metric: str
    tasks: dict[str, TaskResult]
    candidate_mean: float
    champion_mean: float
    candidate_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    champion_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    # per task, which gate texts each model got right ("1") or wrong ("0")
    candidate_outcomes: dict[str, str] = field(default_factory=dict)
    champion_outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """The tasks that fell below the champion by more than their tolerance, worst first."""
        bad = [(r.delta, t) for t, r in self.tasks.items() if not r.ok]
        return [t for _, t in sorted(bad)]

    def summary(self) -> dict[str, Any]:
        """What the decision found on the gate splits, for a run summary: the metric, both means and the
        candidate's metrics per task (a candidate that lost a head has no mean: ``None``)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "metric": self.metric,
            "mean": number(self.candidate_mean),
            "champion_mean": number(self.champion_mean),
            "metrics": self.candidate_metrics,
        }


def _check_splits(
    champion: EncoderHandle, splits: Mapping[str, tuple[Sequence[str], Sequence[int]]], config: GateConfig
) -> None:
    if not splits:
        raise ConfigError(
            "gate: no gate splits; pass {task: (texts, labels)} for every domain and held-out task"
        )
    unknown = sorted(set(splits) - set(champion.labels))
    if unknown:
        raise ConfigError(f"gate: the champion has no head for {unknown} (heads: {sorted(champion.labels)})")
    missing = sorted(set(champion.labels) - set(splits))
    if missing and config.require_all_heads:
        raise ConfigError(
            f"gate: no gate split for {missing}; pass one for every domain and held-out task (or set "
            "require_all_heads: false to gate on fewer)"
        )
    for task, (texts, labels) in splits.items():
        if len(texts) == 0 or len(texts) != len(labels):
            raise ConfigError(f"gate: gate split {task!r} has {len(texts)} texts and {len(labels)} labels")


def _lost_heads(candidate: EncoderHandle, champion: EncoderHandle, tasks: Sequence[str]) -> list[str]:
    problems = []
    for task in tasks:
        if task not in candidate.labels:
            problems.append(f"the candidate has no head {task!r}")
        elif candidate.labels[task] != champion.labels[task]:
            problems.append(
                f"head {task!r} labels {candidate.labels[task]} differ from {champion.labels[task]}"
            )
    return problems


ChampionScores = tuple[dict[str, dict[str, float]], dict[str, str]]


def score_champion(
    champion: EncoderHandle,
    splits: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    config: GateConfig | None = None,
) -> ChampionScores:
    """The champion's gate metrics and per-text outcomes, after checking the gate splits fit it.

    A run that gates several candidates against one champion scores it once and passes the result
    to every :func:`gate` call.
    """
    config = config or GateConfig()
    _check_splits(champion, splits, config)
    return score_heads(champion, splits, batch_size=config.batch_size)


def gate(
    candidate: EncoderHandle,
    champion: EncoderHandle,
    splits: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    config: GateConfig | None = None,
    champion_scores: ChampionScores | None = None,
) -> GateDecision:
    """Score both models on every task's gate split; promote only if no task regresses beyond tolerance.

    ``splits``: task -> (texts, labels) of its **gate** split (``Benchmark.gate``), never its test
    split, which is the report's. ``champion_scores`` is :func:`score_champion` of the same champion,
    splits and config when already computed.
    """
    config = config or GateConfig()
    _check_splits(champion, splits, config)
    tasks = sorted(splits)
    lost = _lost_heads(candidate, champion, tasks)
    champ_metrics, champ_outcomes = champion_scores or score_champion(champion, splits, config)
    if lost:
        mean = sum(m[config.metric] for m in champ_metrics.values()) / len(tasks)
        reason = "rejected: " + "; ".join(lost)
        return GateDecision(
            False, reason, config.metric, {}, float("nan"), mean, {}, champ_metrics, {}, champ_outcomes
        )
    cand_metrics, cand_outcomes = score_heads(candidate, splits, batch_size=config.batch_size)
    def upper(task: str) -> float | None:
        if config.rule == "point":
            return None
        return paired_upper_bound(cand_outcomes[task], champ_outcomes[task], config.confidence)

    results = {
        t: TaskResult(
            cand_metrics[t][config.metric], champ_metrics[t][config.metric], config.tolerance_for(t), upper(t)
        )
        for t in tasks
    }
    cand_mean = sum(r.candidate for r in results.values()) / len(results)
    champ_mean = sum(r.champion for r in results.values()) / len(results)
    problems = [
        f"{t} {config.metric} {results[t].candidate:.3f} vs champion {results[t].champion:.3f} "
        f"({100 * results[t].delta:+.1f} points, tolerance {100 * results[t].tolerance:.1f}"
        + ("" if results[t].upper is None else f", {config.confidence:.0%} bound {100 * results[t].upper:+.1f}")
        + ")"
        for t in sorted((t for t in tasks if not results[t].ok), key=lambda t: results[t].delta)
    ]
    if config.require_mean_not_worse and cand_mean < champ_mean - 1e-9:
        problems.append(f"mean {config.metric} {cand_mean:.3f} below the champion's {champ_mean:.3f}")
    if problems:
        reason = "rejected: " + "; ".join(problems)
    else:
        within = "within tolerance" if config.rule == "point" else "not credibly below tolerance"
        reason = (
            f"promoted: every task {within} of the champion on the gate splits; mean "
            f"{config.metric} {champ_mean:.3f} -> {cand_mean:.3f}"
        )
    return GateDecision(
        not problems,
        reason,
        config.metric,
        results,
        cand_mean,
        champ_mean,
        cand_metrics,
        champ_metrics,
        cand_outcomes,
        champ_outcomes,
    )


def _transition(registry: Registry, changes: Sequence[tuple[str, str, str, str]]) -> list[ModelRecord]:
    """Apply ``(model id, expected status, new status, reason)`` changes in one write transaction.

    Each model's status is re-read inside the transaction, so a concurrent change makes the whole call
    fail with nothing written.
    """
    return registry.set_statuses(
        [(model_id, status, reason) for model_id, _, status, reason in changes],
        expected={model_id: expected for model_id, expected, _, _ in changes},
    )


def apply_decision(
    registry: Registry,
    candidate_record: ModelRecord,
    champion_record: ModelRecord,
    decision: GateDecision,
    *,
    split: str = "gate",
    fingerprints: Mapping[str, str] | None = None,
    run_id: str | None = None,
    report: ReportScores | None = None,
    report_fingerprints: Mapping[str, str] | None = None,
) -> ModelRecord:
    """Record both models' evaluations and set the statuses the decision calls for.

    The decision's evaluations are recorded with ``split`` (``gate``: what the decision read) and
    ``fingerprints`` (task -> the fingerprint of its gate split); ``report``, both models' test scores
    made for the report after the decision, with split ``test`` and ``report_fingerprints``. Promoted:
    candidate -> ``champion`` (reason: the gate's), old champion -> ``archived`` (reason:
    ``superseded by <candidate>``). Rejected: candidate -> ``rejected`` with the reason naming each
    task and its drop. Returns the candidate's updated record.
    """
    if candidate_record.id == champion_record.id:
        raise RegistryError(
            f"{candidate_record.id} cannot be gated against itself; pass the current champion"
        )
    for record, expected in ((candidate_record, "candidate"), (champion_record, "champion")):
        status = registry.get_model(record.id).status
        if status != expected:
            raise RegistryError(
                f"{record.id} is {status!r}, expected {expected!r}; gate a candidate against the current "
                "champion (registry.latest(name, status='champion')); nothing was written"
            )
    recorded = [(split, decision.candidate_metrics, decision.champion_metrics, fingerprints or {})]
    if report is not None:
        recorded.append(("test", report.candidate_metrics, report.champion_metrics, report_fingerprints or {}))
    for split_name, candidate_metrics, champion_metrics, prints in recorded:
        for record, metrics in ((candidate_record, candidate_metrics), (champion_record, champion_metrics)):
            for task, values in sorted(metrics.items()):
                registry.record_evaluation(
                    record.id,
                    domain=task,
                    split=split_name,
                    metrics=values,
                    dataset_fingerprint=prints.get(task),
                    run_id=run_id,
                )
    if decision.promoted:
        changes = [
            (candidate_record.id, "candidate", "champion", decision.reason),
            (champion_record.id, "champion", "archived", f"{SUPERSEDED_BY}{candidate_record.id}"),
        ]
    else:
        changes = [(candidate_record.id, "candidate", "rejected", decision.reason)]
    return _transition(registry, changes)[0]


@dataclass(frozen=True)
class Rollback:
    """What a rollback changed."""

    restored: ModelRecord  # the previous champion, champion again
    retired: ModelRecord  # the champion that was rolled back, now rejected


def rollback(registry: Registry, name: str = "large") -> Rollback:
    """Reject the current champion of ``name`` and restore the one it superseded, in one transaction."""
    current = registry.latest(name, status="champion")
    if current is None:
        raise RegistryError(
            f"no champion named {name!r} to roll back; list models with `fanbu models --name {name}`"
        )
    superseded = [
        m for m in registry.list_models(status="archived") if m.reason == f"{SUPERSEDED_BY}{current.id}"
    ]
    if not superseded:
        raise RegistryError(
            f"{current.id} has no previous champion to roll back to: no model was archived when it became "
            "champion (it was registered as champion directly, or is the first); nothing was changed"
        )
    current_id, previous_id = current.id, superseded[-1].id  # the newest, as registration order goes
    restored, retired = _transition(
        registry,
        [
            (previous_id, "archived", "champion", f"restored by rollback of {current_id}"),
            (current_id, "champion", "rejected", f"rolled back: {previous_id} restored as champion"),
        ],
    )
    return Rollback(restored, retired)
