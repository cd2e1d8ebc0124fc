"""The naive sequential baseline on tiny models."""

from __future__ import annotations

import pytest
import torch
from feedback_helpers import quick_dict

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.strategies.sequential import SequentialConfig


def run_sequential(ctx, **settings):
    info = get_strategy("sequential")
    return info.run(ctx, validate(info.config, {"train": quick_dict(), **settings}))


def test_sequential_fine_tunes_on_each_expert_in_turn(make_context, large_v0, weights_of, toy_data):
    before = weights_of(large_v0)
    output = run_sequential(make_context(), order=["health", "tech"], use_unlabeled=True)
    assert output.relation == "finetune"
    assert output.details["order"] == ["health", "tech"]
    assert output.details["continual"]["lwf_weight"] == 0.0
    assert output.handle.predict_proba(toy_data["test"]["tech"][0], "tech").shape == (60, 3)
    assert any(not torch.equal(v, before[k]) for k, v in weights_of(output.handle).items())
    assert all(torch.equal(v, before[k]) for k, v in weights_of(large_v0).items())
    assert output.metrics["steps"] > 0


def test_safeguards_and_selection_are_off_by_default(make_context, experts, poisoned_expert):
    config = SequentialConfig()
    assert not config.continual.enabled and config.selection_tolerance is None
    output = run_sequential(make_context({"tech": poisoned_expert, "health": experts["health"]}))
    assert output.details["order"] == ["health", "tech"]  # naive: the poisoned expert is used too


def test_selection_can_be_turned_on(make_context, experts, poisoned_expert):
    ctx = make_context({"tech": poisoned_expert, "health": experts["health"]})
    output = run_sequential(ctx, selection_tolerance=0.02)
    assert output.details["order"] == ["health"]
    assert "tech" in output.details["selection"]["excluded"]


def test_unknown_domain_in_order_is_refused(make_context):
    with pytest.raises(ConfigError, match="must list distinct domains"):
        run_sequential(make_context(), order=["tech", "finance"])


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="continual.replay_fraction"):
        validate(SequentialConfig, {"continual": {"replay_fraction": 0.95}})
    with pytest.raises(ConfigError, match="order"):
        validate(SequentialConfig, {"order": "tech"})


def test_unlabeled_per_head_caps_the_pseudo_labelled_texts(make_context, monkeypatch):
    from fanbu.feedback.strategies import sequential

    seen: dict[str, int] = {}
    fit = sequential.fit_candidate

    def record(candidate, ctx, train, *args, **kwargs):
        seen.update({head: len(texts) for head, (texts, _) in train.items()})
        return fit(candidate, ctx, train, *args, **kwargs)

    monkeypatch.setattr(sequential, "fit_candidate", record)
    ctx = make_context()
    run_sequential(ctx, use_unlabeled=True, unlabeled_per_head=10)
    capped = dict(seen)
    run_sequential(ctx, use_unlabeled=True)
    public = {d: len(t) for d, (t, _) in ctx.public.items()}
    assert capped == {d: public[d] + 10 for d in public}
    assert seen == {d: public[d] + len(ctx.unlabeled) for d in public}
