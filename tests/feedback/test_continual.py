"""Continual safeguards: LwF and EWC reduce drift on a held-out head, replay batches, the Fisher."""

from __future__ import annotations

import copy

import pytest
import torch
from feedback_helpers import drift, quick_dict

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.continual import (
    EWC,
    ContinualConfig,
    LwF,
    continual_strategies,
    fisher_diagonal,
    general_texts,
    realign_heads,
)
from fanbu.feedback.shared.replay_batches import MixedPlan
from fanbu.feedback.shared.soft_losses import SoftLabelLoss, is_replay
from fanbu.feedback.shared.soft_targets import TeacherConfig, build_targets
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.distill.forward import distill_forward
from fanbu.train.terms import Batch


def heldout_drift(make_context, large_v0, toy_data, continual: dict) -> float:
    """Drift of the held-out ``mood`` head after naive sequential feedback with ``continual`` on."""
    info = get_strategy("sequential")
    config = validate(info.config, {"train": quick_dict(), "use_unlabeled": True, "continual": continual})
    output = info.run(make_context(), config)
    return drift(output.handle, large_v0, "mood", toy_data["heldout_test"]["mood"][0])


def test_lwf_and_ewc_reduce_drift_on_a_heldout_head(make_context, large_v0, toy_data):
    none = heldout_drift(make_context, large_v0, toy_data, {})
    lwf = heldout_drift(make_context, large_v0, toy_data, {"lwf_weight": 1.0})
    ewc = heldout_drift(make_context, large_v0, toy_data, {"ewc_lambda": 10.0})
    assert none > 0.03  # the unguarded baseline does drift
    assert lwf < 0.7 * none
    assert ewc < 0.5 * none


def test_safeguards_compose_with_swarm_distillation(make_context, large_v0, weights_of):
    before = weights_of(large_v0)
    info = get_strategy("swarm_distill")
    continual = {"lwf_weight": 0.5, "ewc_lambda": 1.0, "fisher_samples": 16, "replay_fraction": 0.25}
    output = info.run(
        make_context(), validate(info.config, {"train": quick_dict(epochs=2), "continual": continual})
    )
    assert output.details["continual"]["replay_fraction"] == 0.25
    assert all(torch.equal(v, before[k]) for k, v in weights_of(large_v0).items())
    assert all(p.grad is None for p in large_v0.model.parameters())


def test_fisher_is_scaled_to_mean_one_and_leaves_the_champion_alone(large_v0, toy_data):
    texts = {d: t for d, (t, _) in toy_data["public"].items()}
    pairs = general_texts(texts, 12, seed=0)
    assert [h for h, _ in pairs[:4]] == ["health", "tech", "health", "tech"]
    fisher = fisher_diagonal(large_v0, pairs)
    params = dict(large_v0.model.named_parameters())
    assert set(fisher) <= set(params)
    assert "heads.mood.weight" not in fisher  # no public text reaches the held-out head
    flat = torch.cat([f.reshape(-1) for f in fisher.values()])
    assert bool((flat >= 0).all()) and float(flat.sum()) > 0
    assert all(p.grad is None for p in large_v0.model.parameters())


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it(large_v0):
    anchor = {n: p.detach().clone() for n, p in large_v0.model.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in anchor.items()}
    term = EWC(fisher, anchor, strength=2.0)
    outputs = {"logits": torch.zeros(1, 3, requires_grad=True)}
    assert float(term.losses(outputs, None, large_v0.model)["ewc"].detach()) == 0.0
    moved = {n: a + 0.1 for n, a in anchor.items()}
    far = EWC(fisher, moved, strength=2.0).losses(outputs, None, large_v0.model)["ewc"]
    count = sum(a.numel() for a in anchor.values())
    assert abs(float(far.detach()) - 0.01 * count) < 1e-3 * count


def test_lwf_is_zero_for_the_unchanged_model(large_v0, toy_data):
    candidate = copy.deepcopy(large_v0)
    candidate.model.eval()
    texts = toy_data["public"]["tech"][0][:4]
    batch = Batch(candidate.tokenize(texts), {}, "tech", torch.arange(4))
    loss = LwF(large_v0, weight=1.0, temperature=2.0).losses(
        distill_forward(candidate.model, batch), batch, candidate.model
    )
    assert float(loss["lwf"].detach()) < 1e-5


def test_replay_batches_are_interleaved_tagged_and_skipped_by_soft_terms(make_context, large_v0):
    main = TextPlan(
        [TaskData("tech", [f"text {i}" for i in range(64)], [0] * 64)], large_v0.tokenize, 16, seed=0
    )
    replay = TextPlan([TaskData("health", ["public text"] * 8, [1] * 8)], large_v0.tokenize, 16, seed=1)
    plan = MixedPlan(main, replay, fraction=0.5, seed=0)
    items = plan.schedule(0)
    assert len(items) == len(plan) == 8 and items == plan.schedule(0)
    replayed = [plan.make(item) for item in items if item.task.startswith("replay.")]
    assert len(replayed) == 4 and all(is_replay(b) and b.task == "health" for b in replayed)
    ctx = make_context()
    soft = SoftLabelLoss(build_targets(ctx, ctx.experts, TeacherConfig()), alpha=1.0, temperature=2.0)
    assert soft.losses({"logits": torch.zeros(1, 3)}, replayed[0], large_v0.model) == {}


def test_replay_without_public_data_is_refused(make_context):
    ctx = make_context()
    ctx.public = {}
    ctx.unlabeled = ctx.unlabeled[:32]
    info = get_strategy("swarm_distill")
    config = validate(info.config, {"train": quick_dict(epochs=1), "continual": {"replay_fraction": 0.2}})
    with pytest.raises(ConfigError, match="replay_fraction"):
        info.run(ctx, config)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"lwf_weight": -0.5}, "lwf_weight"),
        ({"lwf_temperature": 0}, "lwf_temperature"),
        ({"ewc_lambda": -1}, "ewc_lambda"),
        ({"fisher_samples": 0}, "fisher_samples"),
        ({"replay_fraction": 1.0}, "replay_fraction"),
        ({"replay": 0.1}, "replay"),
    ],
)
def test_config_rejects_bad_values(settings, field):
    with pytest.raises(ConfigError, match=field):
        validate(ContinualConfig, settings)
    assert not ContinualConfig().enabled and ContinualConfig(ewc_lambda=1.0).enabled


def test_lwf_keeps_the_previous_outputs_per_example(large_v0, toy_data):
    candidate = copy.deepcopy(large_v0)
    texts = toy_data["public"]["tech"][0][:4]
    batch = Batch(candidate.tokenize(texts), {}, "tech", torch.arange(4))
    term = LwF(large_v0, weight=1.0, temperature=2.0)
    calls = []
    embed = large_v0.model.embed
    large_v0.model.embed = lambda *a, **k: calls.append(1) or embed(*a, **k)
    try:
        first = term.losses(distill_forward(candidate.model.eval(), batch), batch, candidate.model)["lwf"]
        again = term.losses(distill_forward(candidate.model, batch), batch, candidate.model)["lwf"]
        replayed = Batch(batch.inputs, {"replay": torch.ones(4)}, "tech", torch.arange(4))
        term.losses(distill_forward(candidate.model, replayed), replayed, candidate.model)
    finally:
        del large_v0.model.embed
    assert len(calls) == 2  # the second pass over the same examples reused the first one's outputs
    assert torch.allclose(first, again)


def test_prefilled_lwf_outputs_match_the_previous_versions_own(large_v0, toy_data):
    candidate = copy.deepcopy(large_v0)
    texts = toy_data["public"]["tech"][0][:6]
    batch = Batch(candidate.tokenize(texts[2:5]), {}, "tech", torch.arange(2, 5))
    computed = LwF(large_v0, weight=1.0, temperature=2.0, feature_weight=1.0)
    prefilled = LwF(large_v0, weight=1.0, temperature=2.0, feature_weight=1.0)
    features, _ = large_v0.encode(texts)
    prefilled.prefill("tech", features)
    calls = []
    embed = large_v0.model.embed
    large_v0.model.embed = lambda *a, **k: calls.append(1) or embed(*a, **k)
    try:
        pooled, logits = prefilled._previous(batch)
        assert not calls  # every example was prefilled: the previous version did not run
        want_pooled, want_logits = computed._previous(batch)
    finally:
        del large_v0.model.embed
    assert torch.allclose(pooled, want_pooled, atol=1e-5)
    assert logits.keys() == want_logits.keys()
    assert all(torch.allclose(logits[h], want_logits[h], atol=1e-5) for h in logits)


def test_training_on_the_champion_reuses_its_kept_features(make_context, monkeypatch):
    ctx = make_context()
    info = get_strategy("swarm_distill")
    settings = {"train": quick_dict(epochs=1), "continual": {"lwf_weight": 1.0, "realign_heads": True}}
    computed = []
    compute = LwF._compute
    monkeypatch.setattr(LwF, "_compute", lambda self, batch: computed.append(1) or compute(self, batch))
    output = info.run(ctx, validate(info.config, settings))
    assert not computed  # LwF's first epoch and the realignment used the context's champion features
    assert output.details["realigned"]["realign.mood.agreement"] > 0.5


def test_lwf_held_to_the_start_is_zero_for_a_moved_start(make_context, large_v0, toy_data):
    start = copy.deepcopy(large_v0)
    with torch.no_grad():
        for param in start.model.encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    start.model.eval()
    ctx = make_context()
    texts = toy_data["public"]["tech"][0][:4]
    batch = Batch(start.tokenize(texts), {}, "tech", torch.arange(4))
    outputs = distill_forward(start.model, batch)
    losses = {}
    for reference in ("champion", "start"):
        config = ContinualConfig(lwf_weight=1.0, reference=reference)
        (term,) = continual_strategies(config, ctx, seed=0, start=start)
        losses[reference] = float(term.losses(outputs, batch, start.model)["lwf"].detach())
    assert losses["start"] < 1e-5 < losses["champion"]


def test_frozen_layers_stay_as_they_start(make_context, large_v0, weights_of):
    info = get_strategy("swarm_distill")
    config = validate(info.config, {"train": quick_dict(epochs=1), "frozen_layers": 1})
    output = info.run(make_context(), config)
    before, after = weights_of(large_v0), weights_of(output.handle)
    frozen = [k for k in before if k.startswith(("encoder.embeddings.", "encoder.encoder.layer.0."))]
    moved = [k for k in before if k.startswith("encoder.encoder.layer.1.")]
    assert frozen and moved
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in moved)
    too_many = validate(info.config, {"train": quick_dict(epochs=1), "frozen_layers": 99})
    with pytest.raises(ConfigError, match="frozen_layers 99"):
        info.run(make_context(), too_many)


def test_lwf_holds_only_the_heads_the_run_does_not_train(make_context, large_v0):
    ctx = make_context()
    trained = ["tech"]
    (held,) = continual_strategies(ContinualConfig(lwf_weight=1.0), ctx, seed=0, trained=trained)
    (every,) = continual_strategies(
        ContinualConfig(lwf_weight=1.0, lwf_heads="all"), ctx, seed=0, trained=trained
    )
    assert "tech" not in held.heads and "mood" in held.heads
    assert every.heads == sorted(large_v0.labels)
    with pytest.raises(ConfigError, match="lwf_heads: all"):
        continual_strategies(ContinualConfig(lwf_weight=1.0), ctx, seed=0, trained=list(large_v0.labels))


def test_feature_lwf_is_zero_unchanged_and_pulls_the_encoder_back_when_moved(large_v0, toy_data):
    texts = toy_data["public"]["tech"][0][:4]
    batch = Batch(large_v0.tokenize(texts), {}, "tech", torch.arange(4))
    every_head = set(large_v0.labels)  # no logit term is left, which the feature term does not need
    term = LwF(large_v0, weight=0.0, temperature=2.0, skip=every_head, feature_weight=2.0)
    same = copy.deepcopy(large_v0).model.eval()
    assert float(term.losses(distill_forward(same, batch), batch, same)["lwf_features"].detach()) < 1e-8
    moved = copy.deepcopy(large_v0).model.eval()
    with torch.no_grad():
        for param in moved.encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    losses = term.losses(distill_forward(moved, batch), batch, moved)
    assert set(losses) == {"lwf_features"} and float(losses["lwf_features"].detach()) > 1e-4
    losses["lwf_features"].backward()
    grads = [p.grad for p in moved.encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in moved.heads.parameters())  # only the shared encoder is held


def test_feature_lwf_reduces_drift_on_a_heldout_head(make_context, large_v0, toy_data):
    none = heldout_drift(make_context, large_v0, toy_data, {})
    held = heldout_drift(make_context, large_v0, toy_data, {"lwf_feature_weight": 10.0})
    assert none > 0.03
    assert held < 0.7 * none


def test_realignment_refits_an_untrained_head_to_the_reference(large_v0, toy_data):
    candidate = copy.deepcopy(large_v0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in candidate.model.encoder.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    fit_texts = [t for texts, _ in toy_data["public"].values() for t in texts] + toy_data["unlabeled"]
    probe = toy_data["heldout_test"]["mood"][0]  # the held-out task's texts: never fit on
    before = drift(candidate, large_v0, "mood", probe)
    agreed = (candidate.predict(fit_texts, "mood") == large_v0.predict(fit_texts, "mood")).mean()
    tech = candidate.model.heads["tech"].weight.detach().clone()
    known, _ = large_v0.encode(fit_texts)
    same = realign_heads(copy.deepcopy(candidate), large_v0, ["mood"], fit_texts, reference_features=known)
    agreement = realign_heads(candidate, large_v0, ["mood"], fit_texts)
    assert agreement["mood"] > max(0.8, agreed)
    assert same == pytest.approx(agreement)  # the reference's features given instead of computed
    assert drift(candidate, large_v0, "mood", probe) < before
    assert torch.equal(candidate.model.heads["tech"].weight, tech)  # heads not named stay as they are
    with pytest.raises(ConfigError, match="transfer texts"):
        realign_heads(candidate, large_v0, ["mood"], [])
    with pytest.raises(ConfigError, match="missing"):
        realign_heads(candidate, large_v0, ["nope"], fit_texts)


def test_realignment_after_training_reduces_drift_and_is_reported(make_context, large_v0, toy_data):
    none = heldout_drift(make_context, large_v0, toy_data, {})
    realigned = heldout_drift(make_context, large_v0, toy_data, {"realign_heads": True})
    assert none > 0.03
    assert realigned < 0.7 * none
    info = get_strategy("swarm_distill")
    config = validate(info.config, {"train": quick_dict(epochs=1), "continual": {"realign_heads": True}})
    output = info.run(make_context(), config)
    assert set(output.details["realigned"]) == {"realign.mood.agreement"}
