"""The ``search`` section of ``fanbu bench adapt``: architecture search that learns across domains (seed 19).

**Protocol.** For each searched domain and TPE seed, a *cold* search (no prior) and a *warm* search run
with the same trial budget, space, budget and per-trial scoring. The warm search is seeded by the cold
studies of the *other* domains (same seed): their architectures ranked by mean score relative to each
study's best, the top ``enqueue`` tried first (:mod:`fanbu.derive.search.warm`). The count reported is
how many distinct trials each search needs to reach the cold search's best validation score (a warm
search that never reaches it counts ``trials + 1``, the least it could have needed).

**Trials.** A candidate is MiniLM pruned to the architecture (magnitude importance, hidden tied to heads
x the head width (32), vocabulary counted on the domain's training texts) and scored without training by a logistic
regression on its frozen pooled features of the domain's training texts, on the validation split
(:func:`~fanbu.derive.search.probes.probe_accuracy`). A domain's scores are cached per architecture, so
seeds and the two searches share them; the test split is scored in the same pass and read only for the
report's retention rows.

**Swarm architecture.** From the cold searches of seed 0, the candidates are each domain's best three
architectures; the swarm architecture has the best mean validation score relative to each domain's own
searched best. Its test *retention* (probe accuracy over the unpruned model's probe accuracy) is compared
with each domain's own searched best's.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field

from fanbu.bench.stats import ratio_interval
from fanbu.config import Strict
from fanbu.data.builtin import newsgroups20_domains
from fanbu.data.domain import Domain
from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder
from fanbu.derive.search import (
    Budget,
    SearchConfig,
    SearchResult,
    SearchSpace,
    Study,
    probe_accuracy,
    search,
    swarm_architecture,
    warm_configs,
)
from fanbu.errors import ConfigError
from fanbu.evaluate import param_count
from fanbu.models.encoder import EncoderHandle


def head_dim(handle: EncoderHandle) -> int:
    """The encoder's head width (MiniLM: 32). BERT derives it as hidden / heads, so a pruned candidate's
    hidden width follows the heads it keeps."""
    config = handle.model.encoder.config
    return int(config.hidden_size // config.num_attention_heads)


class SearchBenchSettings(Strict):
    """What the ``search`` section runs."""

    domains: list[str] = Field(
        default_factory=lambda: ["comp", "rec", "sci", "politics", "religion"], min_length=3,
        description="Searched domains (at least 3): each is searched cold and warm from the others' studies.")
    seeds: int = Field(3, ge=1, description="TPE seeds per domain.")
    trials: int = Field(12, ge=2, description="Distinct architectures per search, cold and warm alike.")
    enqueue: int = Field(3, ge=1, description="Architectures the warm search takes from the earlier studies.")
    swarm_top: int = Field(3, ge=1, description="Each domain's best architectures that become swarm candidates.")
    space: SearchSpace = Field(
        default_factory=lambda: SearchSpace(layers=[1, 2, 3], heads=[4, 6, 8, 12], ffn=[0.25, 0.5, 1.0],
                                            vocab=[4000, 8000, 16000]),
        description="The architectures searched.")
    budget: Budget = Field(default_factory=lambda: Budget(max_param_ratio=0.3),
                           description="Limits every candidate must meet (of the unpruned encoder's parameters).")
    importance: str = Field("magnitude", description="Unit importance used to prune every candidate.")
    examples_per_label: int = Field(200, ge=4, description="Training texts per label loaded; half of them are "
                                                           "carved off as the validation split the search reads.")
    max_test_per_label: int | None = Field(100, ge=1, description="Test texts per label (None: all).")


def load_search_domains(settings: SearchBenchSettings) -> dict[str, Domain]:
    """The searched domains: ``examples_per_label`` texts per label, half train and half validation."""
    return {d.name: d for d in newsgroups20_domains(0, validation_fraction=0.5, groups=settings.domains,
                                                     max_train_per_label=settings.examples_per_label,
                                                     max_test_per_label=settings.max_test_per_label)}


Score = dict[str, float]  # {"validation": acc, "test": acc}


class DomainScorer:
    """Scores architectures on one domain (pruned encoder, logistic-regression probe), each once."""

    def __init__(self, teacher: EncoderHandle, domain: Domain, importance: str) -> None:
        self.teacher, self.domain, self.importance = teacher, domain, importance
        self.head_dim = head_dim(teacher)
        self.calibration = Calibration(texts=list(domain.train.texts))
        self.cache: dict[str, Score] = {}
        self.seconds = 0.0
        self.reference = self._probe(teacher)  # the unpruned encoder, for retention

    def _probe(self, handle: EncoderHandle) -> Score:
        train = (self.domain.train.texts, self.domain.train.labels or ())
        return {split: probe_accuracy(handle, train, (getattr(self.domain, split).texts,
                                                      getattr(self.domain, split).labels or ()))
                for split in ("validation", "test")}

    def config(self, arch: Mapping[str, Any]) -> PruneConfig:
        return PruneConfig(**arch, head_dim=self.head_dim, hidden=arch["heads"] * self.head_dim,
                           importance=self.importance)

    def build(self, config: PruneConfig) -> EncoderHandle:
        return prune_encoder(self.teacher, config, self.calibration)

    def score(self, arch: Mapping[str, Any], candidate: EncoderHandle | None = None) -> Score:
        key = json.dumps(dict(arch), sort_keys=True)
        if key not in self.cache:
            started = time.perf_counter()
            self.cache[key] = self._probe(candidate if candidate is not None else self.build(self.config(arch)))
            self.seconds += time.perf_counter() - started
        return self.cache[key]


def _search(scorer: DomainScorer, settings: SearchBenchSettings, seed: int, teacher_params: int,
            warm: list[dict[str, Any]]) -> SearchResult:
    fields = list(settings.space.choices())
    config = SearchConfig(trials=settings.trials, seed=seed, space=settings.space, budget=settings.budget)

    built: dict[int, dict[str, Any]] = {}  # id(candidate) -> its architecture

    def build(prune: PruneConfig) -> EncoderHandle:
        built.clear()  # one candidate at a time: the search scores it before it builds the next
        handle = scorer.build(prune)
        built[id(handle)] = {f: getattr(prune, f) for f in fields}
        return handle

    def score(candidate: EncoderHandle) -> float:
        return scorer.score(built[id(candidate)], candidate)["validation"]

    base = PruneConfig(head_dim=scorer.head_dim, importance=settings.importance)
    return search(build, score, config, teacher_params, base=base, progress=False, warm_start=warm)


def _trials(result: SearchResult, fields: list[str]) -> list[dict[str, Any]]:
    return [{**{f: t.params.get(f) for f in fields}, "score": t.score, "state": t.state} for t in result.trials]


def _steps(result: SearchResult, target: float, trials: int) -> int:
    reached = result.trials_to_reach(target)
    return trials + 1 if reached is None else reached


def run_search_section(domains: Mapping[str, Domain], teacher: EncoderHandle, settings: SearchBenchSettings,
                       log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Cold and warm searches per domain and seed, then the swarm architecture; the section's record."""
    missing = [d for d in settings.domains if d not in domains]
    if missing:
        raise ConfigError(f"search.domains {missing}: not loaded (loaded: {', '.join(domains)}); "
                          "list feedback domains the bench loads")
    started = time.perf_counter()
    teacher_params = param_count(teacher.model)
    scorers = {d: DomainScorer(teacher, domains[d], settings.importance) for d in settings.domains}
    fields = list(settings.space.choices())
    runs = []
    cold: dict[int, dict[str, SearchResult]] = {}
    for seed in range(settings.seeds):
        cold[seed] = {d: _search(scorers[d], settings, seed, teacher_params, []) for d in settings.domains}
        for domain in settings.domains:
            others = [Study(o, tuple(cold[seed][o].trials)) for o in settings.domains if o != domain]
            warm_start = warm_configs(others, settings.space, settings.enqueue)
            warm = _search(scorers[domain], settings, seed, teacher_params, warm_start)
            best = cold[seed][domain].best_score
            runs.append({"domain": domain, "seed": seed, "cold_best": best, "warm_best": warm.best_score,
                         "cold_trials_to_best": _steps(cold[seed][domain], best, settings.trials),
                         "warm_trials_to_best": _steps(warm, best, settings.trials),
                         "warm_start": warm_start,
                         "cold_trials": _trials(cold[seed][domain], fields),
                         "warm_trials": _trials(warm, fields)})
        log(f"    search seed {seed}: cold and warm searches of {', '.join(settings.domains)}")
    per_domain = {d: {"cold_trials_to_best": statistics.fmean(r["cold_trials_to_best"] for r in runs if r["domain"] == d),
                      "warm_trials_to_best": statistics.fmean(r["warm_trials_to_best"] for r in runs if r["domain"] == d)}
                  for d in settings.domains}
    choice = swarm_architecture(cold[0], lambda d, arch: scorers[d].score(arch)["validation"], fields,
                                settings.swarm_top)

    def retention(domain: str, arch: Mapping[str, Any]) -> float:
        return scorers[domain].score(arch)["test"] / scorers[domain].reference["test"]

    own = {d: {f: cold[0][d].best_trial.params[f] for f in fields} for d in settings.domains}
    swarm_rows = {d: {"own_architecture": own[d], "own_retention": retention(d, own[d]),
                      "swarm_retention": retention(d, choice.params),
                      "reference_test_acc": scorers[d].reference["test"]} for d in settings.domains}
    return {
        "search": per_domain,
        "search_runs": runs,
        "swarm_arch": {
            "params": choice.params,
            "validation_relative": choice.relative,
            "retention_mean": statistics.fmean(r["swarm_retention"] for r in swarm_rows.values()),
            "per_domain_retention_mean": statistics.fmean(r["own_retention"] for r in swarm_rows.values()),
            "domains": swarm_rows,
            "candidates": choice.candidates,
        },
        "search_seconds": time.perf_counter() - started,
        "scoring_seconds": {d: s.seconds for d, s in scorers.items()},
        "architectures_scored": {d: len(s.cache) for d, s in scorers.items()},
    }


def search_targets(section: Mapping[str, Any]) -> dict[str, Any]:
    """The section's targets: warm trials to the cold best at most 1/3 of cold's (means over domains and
    seeds); the swarm architecture's mean test retention within 1 point of the per-domain architectures'."""
    runs = section["search_runs"]
    cold = statistics.fmean(r["cold_trials_to_best"] for r in runs)
    warm = statistics.fmean(r["warm_trials_to_best"] for r in runs)
    ratio = warm / cold
    warm_by_seed, cold_by_seed = [], []  # each seed's own means, for the interval over seeds
    for seed in sorted({r["seed"] for r in runs}):
        mine = [r for r in runs if r["seed"] == seed]
        warm_by_seed.append(statistics.fmean(r["warm_trials_to_best"] for r in mine))
        cold_by_seed.append(statistics.fmean(r["cold_trials_to_best"] for r in mine))
    swarm = section["swarm_arch"]
    gap = swarm["retention_mean"] - swarm["per_domain_retention_mean"]
    return {
        "warm_search_trials_ratio": {"value": ratio, "bar": 1 / 3, "met": ratio <= 1 / 3,
                                     "interval": ratio_interval(warm_by_seed, cold_by_seed),
                                     "rule": "mean warm trials to reach the cold best / mean cold trials to its "
                                             "best (over domains and seeds), <= bar; interval: Fieller's over the "
                                             "seeds' own means"},
        "swarm_arch_retention_gap": {"value": gap, "bar": -0.01, "met": gap >= -0.01,
                                     "rule": "swarm architecture's mean test retention minus the per-domain "
                                             "searched architectures', >= bar (seed 0's searches: one draw, "
                                             "no interval)"},
    }
