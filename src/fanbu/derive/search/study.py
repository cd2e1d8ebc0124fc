"""Budgeted architecture search: Optuna's TPE picks prune configs, the budget drops candidates early.

Each trial samples a shape from the space (merged onto a base :class:`PruneConfig`), builds the
candidate (pruning, no training), and checks the cheap budgets first: parameters, then latency. An
over-budget candidate is pruned and never scored, so it costs no training. The rest are scored by the
caller's ``score`` (for example a short distillation and the validation accuracy). A configuration
sampled twice is not built again: the earlier trial's outcome is reused.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import optuna
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fanbu.config import format_validation_error
from fanbu.derive.prune import PruneConfig
from fanbu.derive.search.budget import BudgetCheck, infeasible_error
from fanbu.derive.search.config import SearchConfig, SearchError
from fanbu.derive.search.probes import candidate_params
from fanbu.derive.search.result import SearchResult, TrialRecord

H = TypeVar("H")

_ATTEMPTS_PER_TRIAL = 20  # samples drawn per distinct candidate at most, before the search stops early


class _TrialFailed(Exception):
    """Raised inside the objective so Optuna records a failed trial (the reason is in our record)."""


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial logging for the duration of a study."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _failure(where: str, exc: Exception) -> str:
    """A one-line reason for a failed trial."""
    if isinstance(exc, ValidationError):
        return f"{where}: {format_validation_error(exc, 'prune config')}".replace("\n", "; ")
    return f"{where}: {type(exc).__name__}: {exc}".replace("\n", " ")


def _sample(trial: optuna.Trial, config: SearchConfig, base: PruneConfig) -> dict[str, Any]:
    """The searched fields of one candidate (``hidden`` derived when the space ties it to the heads)."""
    sampled: dict[str, Any] = {
        name: trial.suggest_categorical(name, values) for name, values in config.space.choices().items()
    }
    if config.space.ties_hidden(base.head_dim):
        head_dim = sampled.get("head_dim", base.head_dim)
        sampled["hidden"] = sampled["heads"] * head_dim
    return sampled


def _run_trial(
    record: TrialRecord,
    prune_config: PruneConfig,
    build: Callable[[PruneConfig], H],
    score: Callable[[H], float],
    check: BudgetCheck,
    count_params: Callable[[H], int],
    measure_latency: Callable[[H], float] | None,
) -> float | None:
    """Build, check the budget, then score; fills ``record`` in place.

    Returns:
        How far over budget the candidate is (``value / limit - 1``), or None when it fits.
    """
    try:
        candidate = build(prune_config)
    except Exception as exc:  # noqa: BLE001 - any build error fails this candidate, not the search
        record.state, record.reason = "failed", _failure("build", exc)
        return None
    record.n_params = int(count_params(candidate))
    over = check.params(record.n_params)
    if over is None and measure_latency is not None:
        record.latency_ms = float(measure_latency(candidate))
        over = check.latency(record.latency_ms)
    if over is not None:
        record.state, record.reason = "over_budget", over.reason
        return over.excess
    try:
        value = float(score(candidate))
    except Exception as exc:  # noqa: BLE001 - any scoring error fails this candidate, not the search
        record.state, record.reason = "failed", _failure("score", exc)
        return None
    if not math.isfinite(value):
        record.state, record.reason = "failed", f"score: returned {value}; score must return a finite number"
        return None
    record.score = value
    return None


class _Objective:
    """The Optuna objective: builds each new configuration once; a repeat returns the earlier outcome.

    An over-budget trial reports ``-excess`` as an intermediate value before it is pruned, so TPE ranks
    pruned trials by how far over budget they were and moves towards the budget's edge.
    """

    def __init__(
        self, config: SearchConfig, base: PruneConfig, run: Callable[[TrialRecord, PruneConfig], float | None]
    ) -> None:
        self.config = config
        self.base = base
        self.run = run
        self.records: list[TrialRecord] = []  # one per distinct configuration, in the order first tried
        self.seen: dict[str, TrialRecord] = {}
        self.excess: dict[str, float] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = _sample(trial, self.config, self.base)
        key = json.dumps(sampled, sort_keys=True)
        record = self.seen.get(key)
        if record is None:
            record = TrialRecord(number=len(self.records), params=sampled)
            try:
                prune_config = PruneConfig.model_validate({**self.base.model_dump(), **sampled})
            except ValidationError as exc:
                record.state, record.reason = "failed", _failure("prune config", exc)
            else:
                record.params = prune_config.model_dump(mode="json")
                excess = self.run(record, prune_config)
                if excess is not None:
                    self.excess[key] = excess
            self.seen[key] = record
            self.records.append(record)
        if record.state == "over_budget":
            trial.report(-self.excess[key], step=0)
            raise optuna.TrialPruned(record.reason)
        if record.state == "failed":
            raise _TrialFailed(record.reason)
        assert record.score is not None
        return record.score


def _optimize(
    objective: _Objective, config: SearchConfig, progress: bool, warm: Sequence[Mapping[str, Any]] = ()
) -> None:
    """Run TPE until ``config.trials`` distinct candidates were tried, the space is exhausted, the
    timeout passes, or ``_ATTEMPTS_PER_TRIAL * trials`` samples were drawn (repeats cost no build).

    ``warm`` architectures are enqueued: they are the first trials, in place of as many random start-up
    trials (the start-up count is the same with or without them)."""
    space_size = math.prod(len(values) for values in config.space.choices().values())
    target = min(config.trials, space_size)
    deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
    columns = (
        TextColumn("search"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
    )
    with _quiet_optuna(), Progress(*columns, disable=not progress, transient=True) as bar:
        startup = min(10, max(2, config.trials // 3))  # random trials before TPE models the results
        sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=startup)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for params in warm:
            study.enqueue_trial(dict(params), skip_if_exists=True)
        task = bar.add_task("search", total=target, best="")
        for _ in range(_ATTEMPTS_PER_TRIAL * config.trials):
            done = len(objective.records)
            if done >= target or (deadline is not None and time.monotonic() >= deadline):
                break
            study.optimize(objective, n_trials=1, catch=(_TrialFailed,))
            if len(objective.records) > done:
                gc.collect()  # a candidate was built: free it before the next one
                best = max((r.score for r in objective.records if r.score is not None), default=None)
                bar.update(
                    task, completed=len(objective.records), best="" if best is None else f"best {best:.4f}"
                )


def search(
    build: Callable[[PruneConfig], H],
    score: Callable[[H], float],
    config: SearchConfig,
    teacher_params: int,
    measure_latency: Callable[[H], float] | None = None,
    base: PruneConfig | None = None,
    *,
    count_params: Callable[[H], int] = candidate_params,
    progress: bool = True,
    warm_start: Sequence[Mapping[str, Any]] = (),
) -> SearchResult:
    """Find the prune config whose candidate scores best within the budget.

    Args:
        build: Makes a candidate (e.g. a pruned handle) from a prune config; no training.
        score: Scores a candidate, higher is better (e.g. accuracy after a short distillation).
        config: Trials, seed, timeout, space and budget.
        teacher_params: The teacher's parameter count, for ``budget.max_param_ratio``.
        measure_latency: Batch-1 latency of a candidate in ms (see :func:`batch1_latency`); needed
            when ``budget.max_latency_ms`` is set, recorded in every trial when given.
        base: Settings every candidate shares (importance, schedule...); the space overrides its fields.
        count_params: Parameter count of a candidate; the default handles modules and handles.
        progress: Show a rich progress bar.
        warm_start: Architectures to try first (e.g. :func:`~fanbu.derive.search.warm.warm_configs` of
            earlier domains' studies), each a mapping of the space's fields to one of their choices.

    Raises:
        SearchError: a setting is missing, or no candidate fit the budget (the message says what to relax).
    """
    base = base or PruneConfig()
    check = BudgetCheck(config.budget, teacher_params)
    if config.budget.max_latency_ms is not None and measure_latency is None:
        raise SearchError(
            "budget.max_latency_ms is set but search() got no measure_latency; pass "
            "measure_latency=batch1_latency(texts) or drop the latency budget"
        )
    if config.space.tie_hidden and config.space.head_dim is None and base.head_dim is None:
        raise SearchError(
            "space.tie_hidden needs each candidate's head width: list space.head_dim, or set head_dim in "
            "the base prune config (MiniLM's is 32), or set tie_hidden: false"
        )

    def run(record: TrialRecord, prune_config: PruneConfig) -> float | None:
        return _run_trial(record, prune_config, build, score, check, count_params, measure_latency)

    choices = config.space.choices()
    for params in warm_start:
        wrong = {k: v for k, v in params.items() if k not in choices or v not in choices[k]}
        if wrong or set(params) != set(choices):
            raise SearchError(
                f"warm_start architecture {dict(params)} does not fit the search space (fields "
                f"{sorted(choices)}, each one of its choices; off: {wrong or sorted(set(choices) - set(params))}); "
                "enqueue only architectures of this space"
            )
    objective = _Objective(config, base, run)
    _optimize(objective, config, progress, warm_start)
    records = objective.records
    complete = [r for r in records if r.state == "complete" and r.score is not None]
    if not complete:
        raise infeasible_error(records, check)
    best = max(complete, key=lambda r: (r.score, -r.number))
    searched = tuple(config.space.choices()) + (
        ("hidden",) if config.space.ties_hidden(base.head_dim) else ()
    )
    return SearchResult(
        best=PruneConfig.model_validate(best.params),
        best_score=float(best.score),  # type: ignore[arg-type]
        trials=records,
        searched=searched,
        warm_start=[dict(p) for p in warm_start],
    )
