"""The gate: a candidate large model is promoted only if no domain and no held-out task regresses.

:func:`gate` scores the candidate and the champion on every task's test split and decides;
:func:`apply_decision` writes the decision into the registry (statuses, reason, evaluations);
:func:`rollback` restores the previous champion. A promoted candidate's predecessor is archived with
the reason ``superseded by <candidate id>``: that link is how :func:`rollback` finds it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from fanbu.config import Strict
from fanbu.errors import ConfigError, RegistryError
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
    require_mean_not_worse: bool = Field(
        True, description="Also reject a candidate whose mean score over the tasks is below the champion's."
    )
    require_all_heads: bool = Field(
        True, description="Every head of the champion (domain or held-out task) must have a test split."
    )
    batch_size: int = Field(64, ge=1, description="Batch size of the test predictions.")

    def tolerance_for(self, task: str) -> float:
        """The tolerance of ``task``."""
        return self.task_tolerance.get(task, self.tolerance)


@dataclass(frozen=True)
class TaskResult:
    """One task's score on both models."""

    candidate: float
    champion: float
    tolerance: float

    @property
    def delta(self) -> float:
        """Candidate minus champion."""
        return self.candidate - self.champion

    @property
    def ok(self) -> bool:
        """Whether the candidate stays within the tolerance of the champion."""
        return self.delta >= -self.tolerance - 1e-9


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
    # per task, which test texts each model got right ("1") or wrong ("0"): for bootstrap intervals
    candidate_outcomes: dict[str, str] = field(default_factory=dict)
    champion_outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """The tasks that fell below the champion by more than their tolerance, worst first."""
        bad = [(r.delta, t) for t, r in self.tasks.items() if not r.ok]
        return [t for _, t in sorted(bad)]


def _check_tests(
    champion: EncoderHandle, tests: Mapping[str, tuple[Sequence[str], Sequence[int]]], config: GateConfig
) -> None:
    if not tests:
        raise ConfigError(
            "gate: no test splits; pass {task: (texts, labels)} for every domain and held-out task"
        )
    unknown = sorted(set(tests) - set(champion.labels))
    if unknown:
        raise ConfigError(f"gate: the champion has no head for {unknown} (heads: {sorted(champion.labels)})")
    missing = sorted(set(champion.labels) - set(tests))
    if missing and config.require_all_heads:
        raise ConfigError(
            f"gate: no test split for {missing}; pass one for every domain and held-out task (or set "
            "require_all_heads: false to gate on fewer)"
        )
    for task, (texts, labels) in tests.items():
        if len(texts) == 0 or len(texts) != len(labels):
            raise ConfigError(f"gate: test split {task!r} has {len(texts)} texts and {len(labels)} labels")


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
    tests: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    config: GateConfig | None = None,
) -> ChampionScores:
    """The champion's test metrics and per-text outcomes, after checking the tests fit it.

    A run that gates several candidates against one champion scores it once and passes the result
    to every :func:`gate` call.
    """
    config = config or GateConfig()
    _check_tests(champion, tests, config)
    return score_heads(champion, tests, batch_size=config.batch_size)


def gate(
    candidate: EncoderHandle,
    champion: EncoderHandle,
    tests: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    config: GateConfig | None = None,
    champion_scores: ChampionScores | None = None,
) -> GateDecision:
    """Score both models on every task's test split; promote only if no task regresses beyond tolerance.

    ``champion_scores`` is :func:`score_champion` of the same champion, tests and config when already
    computed.
    """
    config = config or GateConfig()
    _check_tests(champion, tests, config)
    tasks = sorted(tests)
    lost = _lost_heads(candidate, champion, tasks)
    champ_metrics, champ_outcomes = champion_scores or score_champion(champion, tests, config)
    if lost:
        mean = sum(m[config.metric] for m in champ_metrics.values()) / len(tasks)
        reason = "rejected: " + "; ".join(lost)
        return GateDecision(
            False, reason, config.metric, {}, float("nan"), mean, {}, champ_metrics, {}, champ_outcomes
        )
    cand_metrics, cand_outcomes = score_heads(candidate, tests, batch_size=config.batch_size)
    results = {
        t: TaskResult(
            cand_metrics[t][config.metric], champ_metrics[t][config.metric], config.tolerance_for(t)
        )
        for t in tasks
    }
    cand_mean = sum(r.candidate for r in results.values()) / len(results)
    champ_mean = sum(r.champion for r in results.values()) / len(results)
    problems = [
        f"{t} {config.metric} {results[t].candidate:.3f} vs champion {results[t].champion:.3f} "
        f"({100 * results[t].delta:+.1f} points, tolerance {100 * results[t].tolerance:.1f})"
        for t in sorted((t for t in tasks if not results[t].ok), key=lambda t: results[t].delta)
    ]
    if config.require_mean_not_worse and cand_mean < champ_mean - 1e-9:
        problems.append(f"mean {config.metric} {cand_mean:.3f} below the champion's {champ_mean:.3f}")
    if problems:
        reason = "rejected: " + "; ".join(problems)
    else:
        reason = (
            f"promoted: every task within tolerance of the champion; mean {config.metric} "
            f"{champ_mean:.3f} -> {cand_mean:.3f}"
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
    split: str = "test",
    fingerprints: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> ModelRecord:
    """Record both models' gate evaluations and set the statuses the decision calls for.

    Promoted: candidate -> ``champion`` (reason: the gate's), old champion -> ``archived`` (reason:
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
    fingerprints = fingerprints or {}
    for record, metrics in (
        (candidate_record, decision.candidate_metrics),
        (champion_record, decision.champion_metrics),
    ):
        for task, values in sorted(metrics.items()):
            registry.record_evaluation(
                record.id,
                domain=task,
                split=split,
                metrics=values,
                dataset_fingerprint=fingerprints.get(task),
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
