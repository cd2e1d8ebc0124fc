"""search() on a synthetic problem whose size, speed and score are known functions of the config."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from rich.console import Console
from torch import nn

from fanbu.derive.prune import PruneConfig
from fanbu.derive.search import Budget, SearchConfig, SearchError, SearchSpace, search

TEACHER_PARAMS = 10_000
SPACE = SearchSpace(layers=[1, 2, 3], heads=[2, 4], ffn=[0.5, 1.0], vocab=[100, None])


@dataclass
class Candidate:
    """A stand-in for a pruned model: size and speed follow from the prune config."""

    config: PruneConfig
    n_params: int
    latency_ms: float


def n_params(c: PruneConfig) -> int:
    vocab = 2000 if c.vocab is None else c.vocab
    return vocab + c.layers * (c.heads * 400 + int(c.ffn * 1000))


def quality(c: PruneConfig) -> float:
    """Bigger is better, so the budget decides; the full vocabulary helps a little."""
    return c.layers + 0.3 * c.heads + 0.5 * c.ffn + (0.2 if c.vocab is None else 0.0)


def build(c: PruneConfig) -> Candidate:
    return Candidate(c, n_params(c), latency_ms=1.0 + 2.0 * c.layers + 0.25 * c.heads)


def count(candidate: Candidate) -> int:
    return candidate.n_params


class Scorer:
    """Counts calls and remembers which candidates were scored."""

    def __init__(self) -> None:
        self.scored: list[Candidate] = []

    def __call__(self, candidate: Candidate) -> float:
        self.scored.append(candidate)
        return quality(candidate.config)


def brute_force(max_params: int) -> tuple[dict, float]:
    best: tuple[dict, float] | None = None
    for layers, heads, ffn, vocab in itertools.product(SPACE.layers, SPACE.heads, SPACE.ffn, SPACE.vocab):
        config = PruneConfig(layers=layers, heads=heads, ffn=ffn, vocab=vocab)
        if n_params(config) <= max_params and (best is None or quality(config) > best[1]):
            best = ({"layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab}, quality(config))
    assert best is not None
    return best


def run(budget: Budget, trials: int = 30, seed: int = 0, scorer: Scorer | None = None, **kwargs):
    config = SearchConfig(trials=trials, seed=seed, space=SPACE, budget=budget)
    return search(
        build, scorer or Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False, **kwargs
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_the_best_config_under_the_parameter_budget(seed: int) -> None:
    expected, expected_score = brute_force(5000)
    result = run(Budget(max_params=5000), trials=20, seed=seed)
    assert {k: getattr(result.best, k) for k in expected} == expected
    assert result.best_score == pytest.approx(expected_score)
    assert len(result.trials) == 20  # distinct candidates: a repeated sample is not built again
    assert len({json.dumps(t.params, sort_keys=True) for t in result.trials}) == 20


def test_a_small_space_is_searched_exhaustively_and_stops() -> None:
    result = run(Budget(max_params=3000), trials=100)
    assert len(result.trials) == 24  # every configuration once, then the search stops
    assert result.best_score == pytest.approx(brute_force(3000)[1])
    assert result.best_trial.score == result.best_score


def test_never_scores_an_over_budget_candidate() -> None:
    scorer = Scorer()
    result = run(Budget(max_param_ratio=0.3), scorer=scorer)
    states = Counter(t.state for t in result.trials)
    assert states["over_budget"] > 0 and states["complete"] > 0
    assert all(c.n_params <= 3000 for c in scorer.scored)
    # repeated configurations reuse the first outcome: one score call per distinct feasible config
    distinct = {json.dumps(t.params, sort_keys=True) for t in result.trials if t.state == "complete"}
    assert len(scorer.scored) == len(distinct)
    for trial in result.trials:
        if trial.state == "over_budget":
            assert trial.score is None and trial.n_params > 3000
            assert "> budget.max_param_ratio 0.3" in trial.reason


def test_the_same_seed_gives_the_same_trials() -> None:
    first = run(Budget(max_params=3000), trials=15, seed=7)
    second = run(Budget(max_params=3000), trials=15, seed=7)
    assert [(t.params, t.state, t.score) for t in first.trials] == [
        (t.params, t.state, t.score) for t in second.trials
    ]


def test_latency_budget_is_checked_after_params_and_before_scoring() -> None:
    timed: list[PruneConfig] = []

    def latency(candidate: Candidate) -> float:
        timed.append(candidate.config)
        return candidate.latency_ms

    scorer = Scorer()
    result = run(Budget(max_params=4000, max_latency_ms=5.6), scorer=scorer, measure_latency=latency)
    assert all(n_params(c) <= 4000 for c in timed)  # over the parameter budget: never timed
    assert all(c.latency_ms <= 5.6 for c in scorer.scored)
    assert result.best.layers == 2 and result.best.heads == 2  # 3 layers or 4 heads at 2 layers are too slow
    slow = [t for t in result.trials if t.state == "over_budget" and t.latency_ms is not None]
    assert slow and all("> budget.max_latency_ms 5.6" in t.reason for t in slow)


def test_nothing_fits_the_parameter_budget() -> None:
    scorer = Scorer()
    with pytest.raises(SearchError) as info:
        run(Budget(max_params=500), trials=5, scorer=scorer)
    message = str(info.value)
    assert "none of the 5 trials produced a scored candidate within the budget" in message
    assert "5 exceeded the parameter budget (limit 500 params; the smallest candidate had" in message
    assert "raise budget.max_params / budget.max_param_ratio or add smaller choices" in message
    assert scorer.scored == []


def test_nothing_fits_the_latency_budget() -> None:
    with pytest.raises(SearchError, match=r"exceeded budget.max_latency_ms 1.0 \(the fastest took 3.50 ms\)"):
        run(Budget(max_latency_ms=1.0), trials=20, measure_latency=lambda c: c.latency_ms)


def test_failed_builds_are_recorded_and_the_search_goes_on() -> None:
    def fragile(c: PruneConfig) -> Candidate:
        if c.heads == 4:
            raise ValueError("4 heads do not divide the hidden width")
        return build(c)

    config = SearchConfig(trials=12, space=SPACE, budget=Budget(max_params=5000))
    result = search(fragile, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False)
    failed = [t for t in result.trials if t.state == "failed"]
    assert failed and all(t.params["heads"] == 4 for t in failed)
    assert all("build: ValueError: 4 heads do not divide the hidden width" in t.reason for t in failed)
    assert result.best.heads == 2


def test_every_trial_failing_is_explained() -> None:
    def broken(candidate: Candidate) -> float:
        raise RuntimeError("validation set is empty")

    config = SearchConfig(trials=3, space=SPACE, budget=Budget(max_params=10**6))
    with pytest.raises(
        SearchError, match=r"3 failed \(first, trial 0: score: RuntimeError: validation set is empty\)"
    ):
        search(build, broken, config, TEACHER_PARAMS, count_params=count, progress=False)


def test_a_non_finite_score_fails_the_trial() -> None:
    config = SearchConfig(trials=2, space=SPACE, budget=Budget(max_params=10**6))
    with pytest.raises(SearchError, match="score: returned nan; score must return a finite number"):
        search(build, lambda c: float("nan"), config, TEACHER_PARAMS, count_params=count, progress=False)


def test_the_space_is_merged_onto_the_base_config() -> None:
    seen: list[PruneConfig] = []

    def recording(c: PruneConfig) -> Candidate:
        seen.append(c)
        return build(c)

    base = PruneConfig(importance="taylor", schedule="iterative", steps=2, heads=12)
    config = SearchConfig(trials=4, space=SPACE, budget=Budget(max_params=10**6))
    result = search(
        recording, Scorer(), config, TEACHER_PARAMS, base=base, count_params=count, progress=False
    )
    assert all(c.importance == "taylor" and c.steps == 2 and c.heads in (2, 4) for c in seen)
    assert result.best.importance == "taylor" and result.best.schedule == "iterative"
    assert result.trials[0].params["importance"] == "taylor"


def test_tie_hidden_sets_hidden_to_heads_times_head_dim() -> None:
    space = SearchSpace(layers=[1], heads=[2, 4], head_dim=[8, 16], ffn=[1.0], vocab=[None], tie_hidden=True)
    config = SearchConfig(trials=6, space=space, budget=Budget(max_params=10**6))
    result = search(build, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False)
    assert all(t.params["hidden"] == t.params["heads"] * t.params["head_dim"] for t in result.trials)
    assert "hidden" in result.searched
    no_dim = SearchConfig(trials=1, space=SearchSpace(tie_hidden=True), budget=Budget(max_params=10))
    with pytest.raises(SearchError, match="space.tie_hidden needs each candidate's head width"):
        search(build, Scorer(), no_dim, TEACHER_PARAMS, count_params=count, progress=False)
    with_base = search(
        build,
        Scorer(),
        config.model_copy(update={"space": space.model_copy(update={"head_dim": None})}),
        TEACHER_PARAMS,
        base=PruneConfig(head_dim=32),
        count_params=count,
        progress=False,
    )
    assert with_base.best.hidden == with_base.best.heads * 32
    untied = search(
        build,
        Scorer(),
        config.model_copy(update={"space": space.model_copy(update={"tie_hidden": False})}),
        TEACHER_PARAMS,
        count_params=count,
        progress=False,
    )
    assert all(t.params["hidden"] is None for t in untied.trials) and "hidden" not in untied.searched


def test_hidden_is_tied_by_default_only_when_a_head_width_is_known() -> None:
    assert SearchSpace(head_dim=[32]).ties_hidden(None) and SearchSpace().ties_hidden(32)
    assert not SearchSpace().ties_hidden(None)  # e.g. a causal LM: hidden is left alone
    result = run(Budget(max_params=10**6), trials=3)
    assert all(t.params["hidden"] is None for t in result.trials)


def test_modules_are_counted_by_default() -> None:
    def as_module(c: PruneConfig) -> nn.Module:
        module = nn.Module()
        module.weight = nn.Parameter(torch.zeros(n_params(c)))
        return module

    config = SearchConfig(trials=10, space=SPACE, budget=Budget(max_params=3000))
    result = search(as_module, lambda m: quality_of(m), config, TEACHER_PARAMS, progress=False)
    assert all(t.n_params == n_params(PruneConfig(**t.params)) for t in result.trials)
    with pytest.raises(SearchError, match="cannot count the parameters of a Candidate: make build return"):
        search(build, Scorer(), config, TEACHER_PARAMS, progress=False)


def quality_of(module: nn.Module) -> float:
    return float(module.weight.numel())


def test_missing_settings_are_explained() -> None:
    config = SearchConfig(trials=2, space=SPACE, budget=Budget(max_latency_ms=5.0))
    with pytest.raises(
        SearchError, match="budget.max_latency_ms is set but search\\(\\) got no measure_latency"
    ):
        search(build, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False)
    with pytest.raises(SearchError, match="teacher_params must be the teacher's parameter count"):
        search(build, Scorer(), config, 0, measure_latency=lambda c: 1.0, count_params=count, progress=False)


def test_the_result_prints_as_a_table_and_serialises() -> None:
    result = run(Budget(max_params=3000), trials=10)
    console = Console(record=True, width=200)
    console.print(result.table())
    text = console.export_text()
    assert "architecture search: best score" in text and "over_budget" in text
    assert text.count("\n") >= len(result.trials)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["best_score"] == result.best_score and len(data["trials"]) == 10


def test_the_timeout_stops_new_trials() -> None:
    def slow(candidate: Candidate) -> float:
        time.sleep(0.2)
        return quality(candidate.config)

    config = SearchConfig(trials=10, timeout_s=0.05, space=SPACE, budget=Budget(max_params=10**6))
    result = search(build, slow, config, TEACHER_PARAMS, count_params=count, progress=False)
    assert len(result.trials) == 1 and result.trials[0].state == "complete"


def test_progress_bar_and_quiet_optuna(capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    before = optuna.logging.get_verbosity()
    config = SearchConfig(trials=3, space=SPACE, budget=Budget(max_params=10**6))
    result = search(build, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=True)
    assert len(result.trials) == 3
    assert optuna.logging.get_verbosity() == before  # restored after the study
    assert "Trial 0 finished" not in capsys.readouterr().err
