"""swarm_distill on tiny models: outputs, selection of a poisoned expert, teacher choice, features."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from feedback_helpers import DOMAINS, make_texts, quick_dict

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.soft_losses import FeatureMatching, weighted_kd
from fanbu.feedback.shared.soft_targets import (
    TeacherConfig,
    build_targets,
    nearest_unlabeled,
    teacher_weights,
)
from fanbu.feedback.strategies.swarm import SwarmConfig
from fanbu.train.classify import evaluate_heads
from fanbu.train.distill.losses import kd_loss
from fanbu.train.distill.teacher import TeacherCache


def run_swarm(ctx, **settings):
    info = get_strategy("swarm_distill")
    return info.run(ctx, validate(info.config, {"train": quick_dict(), **settings}))


def mean_test_acc(handle, toy_data) -> float:
    scores = evaluate_heads(handle, toy_data["test"])
    return sum(r["accuracy"] for r in scores.values()) / len(scores)


def test_by_domain_improves_the_large_model_and_leaves_the_champion_alone(
    make_context, large_v0, experts, toy_data, weights_of
):
    before, expert_before = weights_of(large_v0), weights_of(experts["tech"])
    output = run_swarm(make_context())
    candidate = output.handle
    assert output.relation == "distilled"
    assert candidate.labels == large_v0.labels and candidate.model is not large_v0.model
    texts = toy_data["test"]["tech"][0]
    assert candidate.predict_proba(texts, "tech").shape == (len(texts), 3)
    assert candidate.predict_proba(texts, "mood").shape == (len(texts), 2)
    changed = [k for k, v in weights_of(candidate).items() if not torch.equal(v, before[k])]
    assert changed, "the candidate must differ from the champion"
    assert all(torch.equal(v, before[k]) for k, v in weights_of(large_v0).items())
    assert all(torch.equal(v, expert_before[k]) for k, v in weights_of(experts["tech"]).items())
    assert mean_test_acc(candidate, toy_data) > mean_test_acc(large_v0, toy_data) + 0.1
    assert output.metrics["val.mean_acc"] > output.metrics["val.champion_mean_acc"]
    assert output.details["selection"]["kept"] == sorted(DOMAINS)
    assert output.details["targets"]["tech"]["soft"] > 0


def test_selection_leaves_out_a_poisoned_expert(make_context, experts, poisoned_expert):
    ctx = make_context({"tech": poisoned_expert, "health": experts["health"]})
    output = run_swarm(ctx, train=quick_dict(epochs=1))
    selection = output.details["selection"]
    assert selection["kept"] == ["health"]
    assert "tech" in selection["excluded"] and "below the champion" in selection["excluded"]["tech"]
    scores = selection["scores"]["tech"]
    assert scores["expert"] < scores["champion"]
    assert output.details["targets"]["tech"]["soft"] == 0  # no soft label of the poisoned expert is used


def test_selection_off_keeps_the_poisoned_expert(make_context, experts, poisoned_expert):
    ctx = make_context({"tech": poisoned_expert, "health": experts["health"]})
    output = run_swarm(ctx, selection_tolerance=None, train=quick_dict(epochs=1))
    assert output.details["selection"]["kept"] == ["health", "tech"]


def test_validation_scores_are_evaluated_once_per_swarm(make_context, experts, poisoned_expert, monkeypatch):
    ctx = make_context({"tech": poisoned_expert, "health": experts["health"]})
    first = run_swarm(ctx, train=quick_dict(epochs=1)).details["selection"]
    calls = []
    original = type(ctx.large).predict
    monkeypatch.setattr(
        type(ctx.large), "predict", lambda self, *a, **k: calls.append(self) or original(self, *a, **k)
    )
    again = run_swarm(dataclasses.replace(ctx, work_dir=ctx.work_dir / "again"), train=quick_dict(epochs=1))
    assert again.details["selection"] == first  # the copy shares the memo, so the same scores
    swarm = {id(ctx.large), *(id(e) for e in ctx.experts.values())}
    assert not [h for h in calls if id(h) in swarm]  # no champion or expert was evaluated again
    # another model under a known name is evaluated afresh
    other = dataclasses.replace(ctx, experts={"tech": experts["tech"], "health": experts["health"]})
    assert other.validation_accuracy("tech", "tech") > ctx.validation_accuracy("tech", "tech")
    with pytest.raises(ConfigError, match="no expert 'sports'"):
        ctx.validation_accuracy("sports", "tech")


def test_a_swarm_with_only_bad_experts_is_refused(make_context, poisoned_expert):
    with pytest.raises(ConfigError, match="every expert was left out"):
        run_swarm(make_context({"tech": poisoned_expert}))


def test_confidence_threshold_drops_unconfident_teachers(make_context, tmp_path):
    ctx = make_context()
    loose = build_targets(ctx, ctx.experts, TeacherConfig(choice="confidence"))
    strict = build_targets(ctx, ctx.experts, TeacherConfig(choice="confidence", threshold=0.9))
    for head in DOMAINS:
        assert loose[head].stats()["soft"] == len(loose[head])
        assert strict[head].stats()["soft"] < loose[head].stats()["soft"]
        assert bool((strict[head].weights[strict[head].weights > 0] >= 0.9).all())
        assert strict[head].probs.shape == (len(strict[head]), 3)


def test_teacher_weights():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # (2, 3): confident, uniform
    confidence = teacher_weights(logits, "confidence")
    entropy = teacher_weights(logits, "entropy")
    assert confidence[0] > 0.99 and abs(float(confidence[1]) - 1 / 3) < 1e-6
    assert entropy[0] > 0.99 and abs(float(entropy[1])) < 1e-6
    assert torch.equal(teacher_weights(logits, "by_domain"), torch.ones(2))


def test_cross_heads_mix_every_expert_that_has_the_head(make_context):
    ctx = make_context()
    config = TeacherConfig(choice="entropy", cross_heads=True, use_unlabeled=False)
    targets = build_targets(ctx, ctx.experts, config)
    own = build_targets(ctx, ctx.experts, TeacherConfig(choice="entropy", use_unlabeled=False))
    assert not torch.allclose(targets["tech"].probs, own["tech"].probs)  # the health expert votes too
    assert torch.allclose(targets["tech"].probs.sum(dim=-1), torch.ones(len(targets["tech"])))


def test_served_texts_join_their_own_domains_pool_unlabeled(make_context):
    ctx = make_context(unlabeled=False)
    ctx.collected = {"tech": ["served tech text one", "served tech text two"]}
    targets = build_targets(ctx, ctx.experts, TeacherConfig(use_unlabeled=False))
    tech, other = targets["tech"], next(t for h, t in targets.items() if h != "tech")
    rows = [i for i, text in enumerate(tech.texts) if text.startswith("served tech")]
    assert len(rows) == 2 and all(tech.sources[i] == "tech" and int(tech.labels[i]) == -1 for i in rows)
    assert not any(text.startswith("served tech") for text in other.texts)  # pool "own": not another head's
    off = build_targets(ctx, ctx.experts, TeacherConfig(use_unlabeled=False, use_collected=False))
    assert len(off["tech"]) == len(tech) - 2
    assert "served tech text one" in ctx.transfer_texts("tech")


def test_each_head_gets_the_unlabeled_texts_nearest_its_own(make_context, toy_data, monkeypatch):
    # features that see the domains' words, so that which texts are nearest is known
    words = {d: {w for ws in DOMAINS[d].values() for w in ws} for d in DOMAINS}

    def encode(self, texts, heads=(), batch_size=64):
        rows = [[sum(w in words[d] for w in t.split()) for d in DOMAINS] + [len(t) % 3] for t in texts]
        return torch.tensor(rows, dtype=torch.float32), {}

    ctx = make_context()
    monkeypatch.setattr(type(ctx.large), "encode", encode)
    own = {d: toy_data["public"][d][0] for d in DOMAINS}
    chosen = nearest_unlabeled(ctx, own, 24)
    for domain in DOMAINS:
        mine = set(make_texts(domain, 48, 4)[0])  # the unlabeled texts drawn from this domain
        assert len(chosen[domain]) == 24 and set(chosen[domain]) <= mine
        assert chosen[domain] == [t for t in ctx.unlabeled if t in set(chosen[domain])]  # context order
    assert nearest_unlabeled(ctx, own, len(ctx.unlabeled)) == {d: ctx.unlabeled for d in DOMAINS}


def test_unlabeled_per_head_caps_each_pool_and_encodes_once(make_context, monkeypatch):
    ctx = make_context()
    calls = []
    encode = type(ctx.large).encode

    def counting(self, *args, **kwargs):
        calls.append(self is ctx.large)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(type(ctx.large), "encode", counting)
    config = TeacherConfig(unlabeled_per_head=10)
    targets = build_targets(ctx, ctx.experts, config)
    for head, rows in targets.items():
        assert rows.sources.count("unlabeled") == 10, head
    every = build_targets(ctx, ctx.experts, TeacherConfig())
    assert every["tech"].sources.count("unlabeled") == len(ctx.unlabeled)
    assert calls.count(True) == 1  # the champion's features of each text: computed once per context
    assert build_targets(ctx, ctx.experts, config)["tech"].texts == targets["tech"].texts
    pooled = build_targets(ctx, ctx.experts, TeacherConfig(pool="all", unlabeled_per_head=10))
    assert pooled["tech"].sources.count("unlabeled") == 10
    assert calls.count(True) == 1


def test_start_from_merged_experts_then_distil(make_context, narrow_experts, weights_of, large_v0):
    ctx = make_context()
    before = weights_of(large_v0)
    out = run_swarm(ctx, start="merge", merge={"method": "task_arithmetic", "scaling": 0.5})
    assert out.details["start"] == "merge" and out.handle is not ctx.large
    assert all(torch.equal(v, weights_of(large_v0)[k]) for k, v in before.items())  # champion untouched
    with pytest.raises(ConfigError, match="architecture"):
        run_swarm(make_context(swarm=narrow_experts), start="merge")


def test_entropy_choice_with_narrow_experts_and_feature_matching(make_context, narrow_experts):
    output = run_swarm(
        make_context(narrow_experts), teachers={"choice": "entropy", "threshold": 0.2}, feature_weight=0.5
    )
    assert output.handle.labels.keys() >= set(DOMAINS)
    assert output.metrics["steps"] > 0


def test_feature_matching_projects_to_each_expert_width(make_context, narrow_experts, large_v0):
    targets = build_targets(make_context(narrow_experts), narrow_experts, TeacherConfig(), features=True)
    term = FeatureMatching(targets, weight=1.0, width=large_v0.model.hidden_size)
    assert [(p.in_features, p.out_features) for p in term.proj] == [(32, 16), (32, 16)]
    assert targets["tech"].features["tech"][0].shape == (len(targets["tech"]), 16)


def test_weighted_kd_matches_kd_loss_for_one_teacher():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    probs = torch.softmax(teacher / 2.0, dim=-1)
    same = weighted_kd(student, probs, torch.ones(5), 2.0)
    assert torch.allclose(same, kd_loss(student, teacher, 2.0), atol=1e-5)
    assert float(weighted_kd(student, probs, torch.zeros(5), 2.0)) == 0.0


def test_teacher_outputs_are_cached_in_the_work_dir(make_context, monkeypatch):
    ctx = make_context()
    first = build_targets(ctx, ctx.experts, TeacherConfig(), cache_dir=ctx.work_dir / "cache")
    names = sorted(p.name for p in (ctx.work_dir / "cache").iterdir())
    assert [n.rsplit("-", 1)[0] for n in names] == ["teacher-health", "teacher-tech"]

    def refuse(*args, **kwargs):
        raise AssertionError("the saved cache should have been reused")

    monkeypatch.setattr(TeacherCache, "build", refuse)
    again = build_targets(ctx, ctx.experts, TeacherConfig(), cache_dir=ctx.work_dir / "cache")
    assert torch.equal(first["tech"].probs, again["tech"].probs)


def test_strategies_labelling_other_texts_share_a_cache_dir(make_context, monkeypatch):
    ctx = make_context()
    cache = ctx.work_dir / "cache"
    own = build_targets(ctx, ctx.experts, TeacherConfig(), cache_dir=cache)
    pooled = build_targets(ctx, ctx.experts, TeacherConfig(pool="all"), cache_dir=cache)
    assert len(list(cache.iterdir())) == 4  # one file per expert and text set: nothing overwritten

    def refuse(*args, **kwargs):
        raise AssertionError("both text sets should have been reused")

    monkeypatch.setattr(TeacherCache, "build", refuse)
    assert torch.equal(
        build_targets(ctx, ctx.experts, TeacherConfig(), cache_dir=cache)["tech"].probs, own["tech"].probs
    )
    again = build_targets(ctx, ctx.experts, TeacherConfig(pool="all"), cache_dir=cache)
    assert torch.equal(again["tech"].probs, pooled["tech"].probs)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"teachers": {"choice": "by_domain", "threshold": 0.5}}, "threshold"),
        ({"teachers": {"choice": "vote"}}, "teachers.choice"),
        ({"feature_weight": -1}, "feature_weight"),
        ({"selection_tolerance": -0.1}, "selection_tolerance"),
        ({"continual": {"lwf_weight": -1}}, "continual.lwf_weight"),
        ({"teachers": {"temperature": 0}}, "teachers.temperature"),
        ({"teachers": {"unlabeled_per_head": 0}}, "teachers.unlabeled_per_head"),
        ({"epochs": 3}, "epochs"),
    ],
)
def test_config_rejects_bad_values(settings, field):
    with pytest.raises(ConfigError, match=field):
        validate(SwarmConfig, settings)


@pytest.mark.parametrize("objective", ["mlm", "simcse"])
def test_ssl_pretrains_the_start_on_the_pooled_text_and_leaves_the_champion(
    make_context, large_v0, weights_of, objective
):
    before = weights_of(large_v0)
    ssl = {"objective": objective, "steps": 4, "batch_size": 8}
    output = run_swarm(make_context(), train=quick_dict(epochs=1), ssl=ssl)
    assert output.details["ssl"]["objective"] == objective and output.details["ssl"]["steps"] == 4
    assert output.details["ssl"]["texts"] > 0
    assert all(torch.equal(v, before[k]) for k, v in weights_of(large_v0).items())
    assert output.handle.labels == large_v0.labels


def _tiny_generator(monkeypatch):
    from fanbu.feedback.shared import augment
    from fanbu.models.causal_lm import CausalLMHandle

    monkeypatch.setattr(augment, "load_generator", lambda source: CausalLMHandle.tiny(max_length=256))
    return {"kind": "lm", "lm": {"shots": 2, "per_label": 2, "max_new_tokens": 8, "batch_size": 4,
                                 "filter": {"threshold": 0.0, "require_argmax": False, "min_tokens": 1,
                                            "jaccard": 1.0}}}


def test_augment_adds_filtered_texts_per_domain_and_the_candidate_registers_them(
    make_context, large_v0, monkeypatch, tmp_path
):
    from fanbu.feedback.candidates import register_candidate
    from fanbu.models.artefact import Provenance, read_provenance
    from fanbu.registry import Registry
    from fanbu.registry.workspace import Workspace

    augment = _tiny_generator(monkeypatch)
    output = run_swarm(make_context(), train=quick_dict(epochs=1), augment=augment)
    summary = output.details["augment"]
    assert set(summary) == set(DOMAINS) and all(s["synthetic"] > 0 for s in summary.values())
    assert [s.domain for s in output.synthetic] == sorted(DOMAINS)
    with Registry.open(tmp_path / "home") as registry:
        workspace = Workspace(registry)
        champion = workspace.save_and_register(large_v0, Provenance(name="large"), name="large")
        info = get_strategy("swarm_distill")
        config = validate(info.config, {"train": quick_dict(epochs=1), "augment": augment})
        record = register_candidate(workspace, champion, [champion.id], "swarm_distill", config, output, {}, 1.0, {})
        datasets = [d for d in registry.list_datasets() if d.name.startswith("synthetic/")]
        assert len(datasets) == len(DOMAINS)
        assert {d.id for d in registry.model_datasets(record.id)} == {d.id for d in datasets}
        share = read_provenance(Path(record.path))[0].data_fingerprints["synthetic"]
        assert share["synthetic_rows"] == sum(s.rows for s in output.synthetic) and 0 < share["synthetic_share"] < 1


def test_augment_gan_is_refused_with_the_reason(make_context, monkeypatch):
    with pytest.raises(ConfigError, match="augment.kind 'gan' makes pooled-feature rows"):
        run_swarm(make_context(), train=quick_dict(epochs=1), augment={"kind": "gan"})
