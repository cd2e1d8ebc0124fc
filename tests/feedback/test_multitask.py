"""multitask on tiny models: joint training of every head on all transfer texts, balanced sampling."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from feedback_helpers import DOMAINS, quick_dict

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.fit import balance
from fanbu.feedback.shared.soft_targets import TeacherConfig, balanced_indices, build_targets
from fanbu.feedback.strategies.multitask import MultitaskConfig
from fanbu.train.classify import evaluate_heads


def run_multitask(ctx, **settings):
    info = get_strategy("multitask")
    return info.run(ctx, validate(info.config, {"train": quick_dict(), **settings}))


def test_multitask_trains_every_head_jointly(make_context, large_v0, toy_data, weights_of):
    before = weights_of(large_v0)
    output = run_multitask(make_context())
    candidate = output.handle
    assert output.relation == "multitask" and output.details["balanced"] is True
    assert candidate.predict_proba(toy_data["test"]["health"][0], "health").shape == (60, 3)
    assert any(not torch.equal(v, before[k]) for k, v in weights_of(candidate).items())
    assert all(torch.equal(v, before[k]) for k, v in weights_of(large_v0).items())
    rows = {head: output.details["targets"][head]["rows"] for head in DOMAINS}
    assert len(set(rows.values())) == 1  # balanced: every head as many rows as the largest
    new, old = evaluate_heads(candidate, toy_data["test"]), evaluate_heads(large_v0, toy_data["test"])
    assert sum(new[d]["accuracy"] for d in DOMAINS) > sum(old[d]["accuracy"] for d in DOMAINS) + 0.2


def test_every_expert_labels_every_domains_texts(make_context, toy_data):
    targets = build_targets(make_context(), make_context().experts, TeacherConfig(pool="all"))
    sources = Counter(targets["tech"].sources)
    assert sources == {"tech": 24, "health": 24, "unlabeled": len(toy_data["unlabeled"])}
    hard = targets["tech"].labels
    assert int((hard >= 0).sum()) == 24  # only the head's own public texts carry hard labels


def test_balanced_sampling_gives_every_source_the_same_share(make_context):
    targets = build_targets(make_context(), make_context().experts, TeacherConfig(pool="all"))
    balanced = balance(targets, seed=0)
    counts = Counter(balanced["health"].sources)
    assert len(set(counts.values())) == 1 and set(counts) == {"tech", "health", "unlabeled"}
    assert len(balanced["health"]) == max(len(t) for t in targets.values())


def test_balanced_indices_are_deterministic_and_cover_small_sources():
    sources = ["a"] * 10 + ["b"] * 2
    first = balanced_indices(sources, 12, seed=3)
    assert first == balanced_indices(sources, 12, seed=3)
    assert Counter(sources[i] for i in first) == {"a": 6, "b": 6}
    assert set(first) >= {10, 11}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"balanced": "often"}, "balanced"),
        ({"feature_weight": 1.0}, "feature_weight"),
    ],
)
def test_config_rejects_bad_values(settings, field):
    with pytest.raises(ConfigError, match=field):
        validate(MultitaskConfig, settings)
