"""search() with the real pruning API on a tiny encoder: build = prune, score = a short training run."""

from __future__ import annotations

import random

import pytest

from fanbu.derive.prune import Calibration, PruneConfig, count_parameters, prune_encoder
from fanbu.derive.search import Budget, SearchConfig, SearchSpace, batch1_latency, search
from fanbu.models import EncoderHandle
from fanbu.train import TrainConfig
from fanbu.train.classify import evaluate_heads, train_heads

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]


def toy_task(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Class 0 mentions 'apple', class 1 'zebra', among random filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        filler = rng.sample(WORDS, 3)
        filler.insert(rng.randrange(4), "apple" if label == 0 else "zebra")
        texts.append(" ".join(filler))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def teacher() -> EncoderHandle:
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64, seed=1)
    handle.add_head("topic", ["apple", "zebra"])
    return handle


def test_search_over_real_pruned_encoders(teacher: EncoderHandle) -> None:
    train, validation = toy_task(48, seed=0), toy_task(24, seed=1)
    calibration = Calibration(texts=train[0], labels=train[1], head="topic", batch_size=8)
    teacher_params = count_parameters(teacher)
    scored: list[EncoderHandle] = []

    def build(config: PruneConfig) -> EncoderHandle:
        return prune_encoder(teacher, config, calibration)

    def score(student: EncoderHandle) -> float:
        scored.append(student)
        settings = TrainConfig(epochs=1, batch_size=8, lr=3e-3, max_steps=3, progress=False, seed=0)
        train_heads(student, {"topic": train}, settings)
        return evaluate_heads(student, {"topic": validation})["topic"]["accuracy"]

    space = SearchSpace(layers=[1, 2, 3], heads=[1, 2, 4], head_dim=[4, 8], ffn=[0.5, 1.0], vocab=[None, 200])
    config = SearchConfig(trials=6, seed=0, space=space, budget=Budget(max_param_ratio=0.4))
    result = search(
        build,
        score,
        config,
        teacher_params,
        measure_latency=batch1_latency(train[0][:4], iterations=3),
        progress=False,
    )
    states = [t.state for t in result.trials]
    assert "failed" not in states, [t.reason for t in result.trials]  # hidden = heads x head_dim each time
    assert "over_budget" in states and len(scored) == states.count("complete")
    assert all(t.params["hidden"] == t.params["heads"] * t.params["head_dim"] for t in result.trials)
    assert all(t.latency_ms is not None and t.latency_ms > 0 for t in result.trials if t.state == "complete")
    best = build(result.best)
    assert count_parameters(best) == result.best_trial.n_params <= 0.4 * teacher_params
    assert best.model.encoder.config.num_hidden_layers == result.best.layers
    assert count_parameters(teacher) == teacher_params  # candidates are new handles
