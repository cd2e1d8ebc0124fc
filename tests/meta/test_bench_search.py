"""The search section of ``fanbu bench adapt`` end to end on a tiny random encoder and word-list domains."""

from __future__ import annotations

import random

import pytest

from fanbu.bench.adapt.plan import AdaptBenchSettings
from fanbu.bench.adapt.search import SearchBenchSettings, run_search_section, search_targets
from fanbu.bench.stats import ratio_interval
from fanbu.data.domain import Domain, Split
from fanbu.errors import ConfigError
from fanbu.models.encoder import EncoderHandle

WORDS = {
    "a": ["orbit rocket moon", "doctor clinic drug"],
    "b": ["goal match team", "vote senate law", "church faith god"],
    "c": ["chip disk screen", "car engine wheel"],
}


def _split(labels: list[str], n: int, rng: random.Random) -> Split:
    rows = [(rng.randrange(len(labels)), rng.random()) for _ in range(n)]
    texts = [" ".join(rng.sample(labels[y].split(), 2) + rng.sample(["the", "a", "of", "and"], 2)) for y, _ in rows]
    return Split(tuple(texts), tuple(y for y, _ in rows))


def _domains() -> dict[str, Domain]:
    rng = random.Random(0)
    return {name: Domain(name, "classification", _split(labels, 30, rng), _split(labels, 16, rng),
                         _split(labels, 16, rng), tuple(f"{name}{i}" for i in range(len(labels))))
            for name, labels in WORDS.items()}


def _settings(**extra) -> SearchBenchSettings:
    return SearchBenchSettings.model_validate({
        "domains": list(WORDS), "seeds": 2, "trials": 4, "enqueue": 2, "swarm_top": 2,
        "space": {"layers": [1, 2], "heads": [2, 4], "ffn": [0.5, 1.0], "vocab": [None]},
        "budget": {"max_param_ratio": 0.99}, **extra})


def test_cold_and_warm_searches_and_the_swarm_architecture(one_thread):
    teacher = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    section = run_search_section(_domains(), teacher, _settings())
    assert set(section["search"]) == set(WORDS)
    runs = section["search_runs"]
    assert len(runs) == 3 * 2
    for run in runs:
        assert 1 <= run["cold_trials_to_best"] <= 4 and 1 <= run["warm_trials_to_best"] <= 5
        assert len(run["warm_start"]) == 2  # from the other domains' cold studies
        warm_first = [{k: t[k] for k in ("layers", "heads", "ffn", "vocab")} for t in run["warm_trials"][:2]]
        assert warm_first == run["warm_start"]  # the enqueued architectures ran first
        assert len(run["cold_trials"]) == len(run["warm_trials"]) == 4  # the same budget
    # a domain's architectures are scored once, whichever search or seed asks
    assert all(1 <= n <= 8 for n in section["architectures_scored"].values())
    swarm = section["swarm_arch"]
    assert set(swarm["params"]) == {"layers", "heads", "ffn", "vocab"}
    assert 0.0 < swarm["retention_mean"] and 0.0 < swarm["per_domain_retention_mean"]
    goals = search_targets(section)
    assert set(goals) == {"warm_search_trials_ratio", "swarm_arch_retention_gap"}
    assert goals["warm_search_trials_ratio"]["bar"] == pytest.approx(1 / 3)
    runs = section["search_runs"]  # two seeds: Fieller's interval over each seed's own means

    def means(key: str) -> list[float]:
        return [sum(r[key] for r in runs if r["seed"] == s) / 3 for s in (0, 1)]

    expected = ratio_interval(means("warm_trials_to_best"), means("cold_trials_to_best"))
    assert goals["warm_search_trials_ratio"]["interval"] == (None if expected is None else pytest.approx(expected))


def test_the_warm_search_interval_holds_its_ratio_of_means():
    runs = [{"seed": s, "domain": d, "cold_trials_to_best": c, "warm_trials_to_best": w}
            for s, d, c, w in ((0, "a", 6, 2), (0, "b", 8, 2), (1, "a", 7, 3), (1, "b", 9, 1), (2, "a", 8, 2),
                               (2, "b", 6, 3))]
    swarm = {"retention_mean": 0.9, "per_domain_retention_mean": 0.905}
    goals = search_targets({"search_runs": runs, "swarm_arch": swarm})
    ratio = goals["warm_search_trials_ratio"]
    assert ratio["value"] == pytest.approx(13 / 44)
    assert ratio["interval"] == pytest.approx(ratio_interval([2, 2, 2.5], [7, 8, 7]))
    assert ratio["interval"][0] < 13 / 44 < ratio["interval"][1]
    assert goals["swarm_arch_retention_gap"]["met"]


def test_search_settings_are_checked():
    with pytest.raises(ValueError, match="at least 3"):
        SearchBenchSettings.model_validate({"domains": ["comp", "rec"]})
    with pytest.raises(ValueError, match="sections"):
        AdaptBenchSettings.model_validate({"sections": ["searches"]})
    teacher = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    with pytest.raises(ConfigError, match=r"search.domains \['zzz'\]: not loaded"):
        run_search_section(_domains(), teacher, _settings(domains=["a", "b", "zzz"]))
