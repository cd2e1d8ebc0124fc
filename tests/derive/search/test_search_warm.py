"""Search that learns across domains: warm starts from earlier studies, and one swarm architecture."""

from __future__ import annotations

import json

import pytest

from fanbu.derive.prune import PruneConfig
from fanbu.derive.search import (
    Budget,
    SearchConfig,
    SearchError,
    SearchResult,
    SearchSpace,
    Study,
    TrialRecord,
    load_study,
    rank_architectures,
    save_study,
    search,
    swarm_architecture,
    warm_configs,
)
from tests.derive.search.test_search_study import SPACE, TEACHER_PARAMS, Scorer, build, count, quality

FIELDS = list(SPACE.choices())


def trial(number: int, score: float | None, state: str = "complete", **params) -> TrialRecord:
    return TrialRecord(number=number, params=params, score=score, state=state)  # type: ignore[arg-type]


def arch(layers: int, heads: int, ffn: float = 0.5, vocab: int | None = 100) -> dict:
    return {"layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab}


def test_the_enqueued_architectures_run_first_and_in_order():
    warm = [arch(2, 4), arch(1, 2, 1.0, None)]
    config = SearchConfig(trials=6, seed=3, space=SPACE, budget=Budget(max_params=5000))
    result = search(build, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False, warm_start=warm)
    assert [{k: t.params[k] for k in FIELDS} for t in result.trials[:2]] == warm
    assert len(result.trials) == 6 and result.warm_start == warm


def test_a_warm_start_outside_the_space_is_refused_by_name():
    config = SearchConfig(trials=3, space=SPACE, budget=Budget(max_params=5000))
    with pytest.raises(SearchError, match=r"does not fit the search space.*enqueue only architectures"):
        search(build, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False,
               warm_start=[arch(7, 4)])


def test_architectures_are_ranked_by_mean_score_relative_to_each_studys_best():
    # domain a's scores are on a larger scale than b's: only relative scores are comparable
    a = Study("a", (trial(0, 10.0, **arch(1, 2)), trial(1, 8.0, **arch(2, 4)), trial(2, None, "over_budget", **arch(3, 4))))
    b = Study("b", (trial(0, 0.5, **arch(1, 2)), trial(1, 1.0, **arch(2, 4)), trial(2, 0.95, **arch(2, 2))))
    ranked = rank_architectures([a, b], FIELDS)
    assert [r.params for r in ranked] == [arch(2, 2), arch(2, 4), arch(1, 2)]
    assert ranked[0].relative == pytest.approx(0.95) and ranked[0].studies == 1
    assert ranked[1].relative == pytest.approx((0.8 + 1.0) / 2) and ranked[1].studies == 2
    assert ranked[2].relative == pytest.approx((1.0 + 0.5) / 2)
    # an over-budget trial is never enqueued; architectures the new space lacks are skipped
    small = SearchSpace(layers=[1, 2], heads=[4], ffn=[0.5], vocab=[100])
    assert warm_configs([a, b], small, enqueue=3) == [arch(2, 4)]
    with pytest.raises(SearchError, match="scored no architecture of this search space"):
        warm_configs([a, b], SearchSpace(layers=[3], heads=[8], ffn=[0.5], vocab=[100]), enqueue=2)


def test_a_warm_search_reaches_the_cold_best_sooner_on_a_related_domain():
    """Two 'domains' share what makes an architecture good (the budget's edge): the warm search of the
    second, seeded by the first's study, reaches the cold search's best in fewer trials."""
    budget = Budget(max_params=4000)
    config = SearchConfig(trials=12, seed=0, space=SPACE, budget=budget)
    first = search(build, Scorer(), config, TEACHER_PARAMS, count_params=count, progress=False)
    study = Study("first", tuple(first.trials))

    def shifted(candidate):  # the second domain: the same ranking on another scale
        return 0.1 * quality(candidate.config) + 2.0

    cold_steps, warm_steps = [], []
    for seed in range(3):
        second = SearchConfig(trials=12, seed=seed + 10, space=SPACE, budget=budget)
        cold = search(build, shifted, second, TEACHER_PARAMS, count_params=count, progress=False)
        warm = search(build, shifted, second, TEACHER_PARAMS, count_params=count, progress=False,
                      warm_start=warm_configs([study], SPACE, enqueue=2))
        cold_steps.append(cold.trials_to_reach(cold.best_score))
        warm_steps.append(warm.trials_to_reach(cold.best_score))
    assert all(w is not None and w <= 2 for w in warm_steps)
    assert sum(warm_steps) < sum(cold_steps)


def test_a_study_round_trips_and_bad_files_get_clear_errors(tmp_path):
    result = SearchResult(best=PruneConfig(layers=1), best_score=0.5,
                          trials=[trial(0, 0.5, **arch(1, 2)), trial(1, None, "failed", **arch(2, 2))])
    path = save_study(tmp_path / "comp" / "study.json", "comp", result)
    study = load_study(path)
    assert study.domain == "comp" and [t.score for t in study.trials] == [0.5, None]
    with pytest.raises(SearchError, match="does not exist; give the study.json"):
        load_study(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SearchError, match="is not readable JSON"):
        load_study(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"trials": []}))
    with pytest.raises(SearchError, match="is not a search study"):
        load_study(tmp_path / "other.json")
    raw = json.loads(path.read_text())
    raw["trials"][0]["surprise"] = 1
    (tmp_path / "edited.json").write_text(json.dumps(raw))
    with pytest.raises(SearchError, match="trial 0 has unexpected fields"):
        load_study(tmp_path / "edited.json")


def test_the_swarm_architecture_has_the_best_mean_relative_score():
    results = {
        "a": SearchResult(PruneConfig(), 1.0, [trial(0, 1.0, **arch(1, 2)), trial(1, 0.9, **arch(2, 2))]),
        "b": SearchResult(PruneConfig(), 2.0, [trial(0, 2.0, **arch(2, 4)), trial(1, 1.9, **arch(2, 2))]),
    }
    table = {("a", "1-2"): 1.0, ("a", "2-2"): 0.9, ("a", "2-4"): 0.5,
             ("b", "1-2"): 1.0, ("b", "2-2"): 1.9, ("b", "2-4"): 2.0}
    asked = []

    def score(domain, params):
        asked.append((domain, params["layers"], params["heads"]))
        return table[(domain, f"{params['layers']}-{params['heads']}")]

    choice = swarm_architecture(results, score, FIELDS, top=2)
    assert choice.params == arch(2, 2)  # neither domain's own best, but the best for both together
    assert choice.relative == pytest.approx((0.9 + 0.95) / 2)
    assert choice.per_domain == pytest.approx({"a": 0.9, "b": 0.95})
    assert len(choice.candidates) == 3 and len(asked) == 6
    with pytest.raises(SearchError, match="no domain searched"):
        swarm_architecture({}, score, FIELDS)
