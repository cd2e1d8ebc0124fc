"""What the swarm's pruned students kept, fed back: layer-wise learning rates and the union structure."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from _merge_fixtures import tiny_large, tiny_swarm, toy_task
from feedback_helpers import quick_dict

from fanbu.config import validate
from fanbu.derive.prune import Calibration, PruneConfig, count_parameters, prune_encoder, unit_importance
from fanbu.derive.prune.subnetwork import subnetwork_of
from fanbu.errors import ConfigError
from fanbu.feedback import FeedbackContext, get_strategy
from fanbu.feedback.shared.swarm_structure import swarm_layer_multipliers
from fanbu.feedback.strategies.multitask import MultitaskConfig, multitask
from fanbu.feedback.strategies.structure import StructureConfig, swarm_structure
from fanbu.feedback.strategies.swarm import SwarmConfig, swarm_distill
from fanbu.models import EncoderHandle, load_handle
from fanbu.models.artefact import Provenance

TEXTS = {d: toy_task(d, 32, seed=1)[0] for d in ("sentiment", "topic")}
LAYER = "encoder.encoder.layer.{}."


@pytest.fixture(scope="module")
def large() -> EncoderHandle:
    """The champion: a tiny 4-layer encoder with heads sentiment, topic and faith (do not modify)."""
    return tiny_large(num_layers=4)


def student(large: EncoderHandle, domain: str, **settings) -> EncoderHandle:
    """A student pruned from ``large`` (calibrated on ``domain``'s texts)."""
    return prune_encoder(large, PruneConfig(**settings), Calibration(TEXTS[domain]))


def context(large: EncoderHandle, experts: dict[str, EncoderHandle], tmp_path: Path) -> FeedbackContext:
    return FeedbackContext(large=large, experts=experts, public={}, work_dir=tmp_path)


# --------------------------------------------------------------------------- the recorded importances


def test_each_round_records_what_it_saw_kept_and_scored_in_the_original_numbering(
    large: EncoderHandle, tmp_path: Path
) -> None:
    config = PruneConfig(layers=2, heads=2, head_dim=8, hidden=16, schedule="iterative", steps=2)
    first, second = subnetwork_of(prune_encoder(large, config)).rounds  # type: ignore[union-attr]
    assert first.method == "magnitude" and first.layers == [0, 1, 2, 3]
    assert first.layer_scores == pytest.approx(unit_importance(large).layers.tolist())
    assert second.layers == first.kept_layers and second.heads == first.kept_heads  # composed
    assert set(second.kept_layers) <= set(first.kept_layers) and len(second.kept_layers) == 2
    assert len(second.layer_scores) == 3 and [len(h) for h in second.head_scores] == [3, 3, 3]  # type: ignore[arg-type]
    position = {layer: i for i, layer in enumerate(second.layers)}
    for layer, heads in zip(second.kept_layers, second.kept_heads, strict=True):
        assert len(heads) == 2 and set(heads) <= set(second.heads[position[layer]])

    explicit = prune_encoder(large, PruneConfig(layers=[0, 2]))  # nothing chosen by importance
    (only,) = subnetwork_of(explicit).rounds  # type: ignore[union-attr]
    assert only.method is None and only.layer_scores is None and only.kept_layers == [0, 2]
    again = prune_encoder(explicit, PruneConfig(layers=1))  # a second stage continues the numbering
    rounds = subnetwork_of(again).rounds  # type: ignore[union-attr]
    assert rounds[1].layers == [0, 2] and rounds[1].kept_layers in ([0], [2])
    saved = load_handle(again.save(tmp_path / "student", Provenance(name="s:v1")))
    assert subnetwork_of(saved).rounds == rounds  # type: ignore[arg-type,union-attr]


# --------------------------------------------------------------------------- layer-wise learning rates


def test_multipliers_from_known_records(large: EncoderHandle) -> None:
    experts = {
        "sentiment": student(large, "sentiment", layers=[0, 1]),
        "topic": student(large, "topic", layers=[0, 2]),
    }
    names = {n for n, _ in large.model.named_parameters()}
    got = swarm_layer_multipliers(large, experts, floor=0.1)
    assert all(any(n.startswith(prefix) for n in names) for prefix in got)  # real parameter prefixes
    assert got == pytest.approx(
        {
            "encoder.embeddings.": 0.1,
            LAYER.format(0): 1.0,  # kept by 2 of 2
            LAYER.format(1): 0.55,  # kept by 1 of 2
            LAYER.format(2): 0.55,
            LAYER.format(3): 0.1,  # kept by none
            "heads.": 1.0,
        }
    )


def test_multipliers_follow_the_recorded_scores(large: EncoderHandle) -> None:
    pruned = student(large, "topic", layers=2)  # layers chosen by magnitude
    (scored,) = subnetwork_of(pruned).rounds  # type: ignore[union-attr]
    got = swarm_layer_multipliers(large, {"topic": pruned}, floor=0.2)
    scores = torch.tensor(scored.layer_scores)
    kept = torch.zeros(4)
    kept[scored.kept_layers] = scores[scored.kept_layers] / scores.max()
    want = 0.2 + 0.8 * kept / kept.max()
    assert [got[LAYER.format(i)] for i in range(4)] == pytest.approx(want.tolist())
    assert sorted(got[LAYER.format(i)] for i in range(4))[:2] == [0.2, 0.2]  # the dropped layers


def test_multipliers_need_records_of_this_champion(large: EncoderHandle) -> None:
    with pytest.raises(
        ConfigError, match="layer_lr: swarm: expert 'topic' has no recorded.*layer_lr: uniform"
    ):
        swarm_layer_multipliers(large, {"topic": copy.deepcopy(large)}, 0.1)
    other = prune_encoder(tiny_large(num_layers=4, intermediate_size=48), PruneConfig(layers=[0]))
    with pytest.raises(ConfigError, match="shapes differ from the champion's.*layer_lr: uniform"):
        swarm_layer_multipliers(large, {"topic": other}, 0.1)
    with pytest.raises(ConfigError, match="layer_lr_floor = 0"):
        swarm_layer_multipliers(large, {"topic": other}, 0.0)
    with pytest.raises(ValueError, match="remove train.lr_multipliers"):
        SwarmConfig(layer_lr="swarm", train={"lr_multipliers": {"heads.": 2.0}})


def pruned_swarm() -> tuple[FeedbackContext, dict[str, EncoderHandle]]:
    """The tiny swarm with its experts pruned to one layer each (sentiment layer 1, topic layer 0)."""
    swarm = tiny_swarm()
    keep = {"sentiment": [1], "topic": [0]}
    experts = {
        d: prune_encoder(
            copy.deepcopy(e), PruneConfig(layers=keep[d], heads=2, hidden=16), Calibration(TEXTS[d])
        )
        for d, e in swarm.experts.items()
    }
    return swarm, experts


@pytest.mark.parametrize(("run", "config"), [(swarm_distill, SwarmConfig), (multitask, MultitaskConfig)])
def test_layer_lr_swarm_changes_training_and_uniform_stays_as_it_was(run, config, tmp_path: Path) -> None:
    swarm, experts = pruned_swarm()
    settings = {"train": quick_dict(epochs=1), "selection_tolerance": None}
    outs = {}
    for mode in ("uniform", "swarm"):
        ctx = swarm.context(tmp_path / mode, experts)
        outs[mode] = run(ctx, validate(config, {**settings, "layer_lr": mode}))
    default = run(swarm.context(tmp_path / "default", experts), validate(config, settings))
    assert outs["uniform"].details["lr_multipliers"] is None
    multipliers = outs["swarm"].details["lr_multipliers"]
    assert multipliers["encoder.embeddings."] == 0.1 and multipliers["heads."] == 1.0
    layers = [multipliers[LAYER.format(i)] for i in range(2)]  # each kept by one student
    assert max(layers) == 1.0 and min(layers) > 0.5
    uniform, other = outs["uniform"].handle.model.state_dict(), outs["swarm"].handle.model.state_dict()
    assert all(torch.equal(v, default.handle.model.state_dict()[k]) for k, v in uniform.items())
    embeddings = "encoder.embeddings.word_embeddings.weight"
    start = swarm.large.model.state_dict()[embeddings]
    assert (other[embeddings] - start).abs().sum() < 0.5 * (uniform[embeddings] - start).abs().sum()


# --------------------------------------------------------------------------- swarm_structure


def test_swarm_structure_is_registered_for_pruned_students() -> None:
    info = get_strategy("swarm_structure")
    assert info.config is StructureConfig and info.has("pruned_experts")


def tokens(handle: EncoderHandle) -> set[str]:
    return set(handle.tokenizer.get_vocab())


def test_the_vocabulary_is_the_union_of_what_the_students_kept(large: EncoderHandle, tmp_path: Path) -> None:
    experts = {d: student(large, d, vocab=200) for d in ("sentiment", "topic")}
    out = swarm_structure(context(large, experts, tmp_path), StructureConfig())
    kept = tokens(out.handle)
    only_one = tokens(experts["sentiment"]) ^ tokens(experts["topic"])
    nobody = tokens(large) - tokens(experts["sentiment"]) - tokens(experts["topic"])
    assert only_one and nobody
    assert tokens(experts["sentiment"]) | tokens(experts["topic"]) <= kept  # kept by any student: survives
    assert not kept & nobody  # kept by none: gone
    assert set(large.tokenizer.all_special_tokens) <= kept
    assert out.relation == "pruned" and out.details["vocab"] == {
        "kept": len(kept),
        "of": len(large.tokenizer),
    }
    params = out.details["params"]
    assert params["after"] == count_parameters(out.handle) < params["before"] == count_parameters(large)
    rows = large.model.encoder.embeddings.word_embeddings.weight  # (vocab, hidden)
    new_rows = out.handle.model.encoder.embeddings.word_embeddings.weight
    old_id, new_id = large.tokenizer.get_vocab(), out.handle.tokenizer.get_vocab()
    for token in sorted(only_one)[:5]:
        assert torch.equal(new_rows[new_id[token]], rows[old_id[token]])
    for head in sorted(large.labels):  # on the texts the students saw, nothing changed
        texts = TEXTS["sentiment"] + TEXTS["topic"]
        np.testing.assert_allclose(
            out.handle.predict_proba(texts, head), large.predict_proba(texts, head), atol=1e-5
        )
    strict = swarm_structure(context(large, experts, tmp_path), StructureConfig(min_share=1.0))
    assert tokens(strict.handle) == tokens(experts["sentiment"]) & tokens(experts["topic"])  # kept by both


def test_ffn_neurons_too_and_the_candidate_predicts_saves_and_reloads(
    large: EncoderHandle, tmp_path: Path
) -> None:
    experts = {
        "sentiment": student(large, "sentiment", layers=[0, 1], ffn=0.5, vocab=200),
        "topic": student(large, "topic", layers=[0, 2], ffn=0.25, vocab=200),
    }
    before = {k: v.clone() for k, v in large.model.state_dict().items()}
    vocab_only = swarm_structure(context(large, experts, tmp_path), StructureConfig())
    out = swarm_structure(context(large, experts, tmp_path), StructureConfig(axes=["vocab", "ffn"]))
    ffn = out.details["ffn"]
    assert ffn["kept"] == out.handle.model.encoder.config.intermediate_size == 32  # of 64
    assert ffn["voters"] == {"0": 2, "1": 1, "2": 1, "3": 0} and ffn["filled"]["3"] == 32
    assert ffn["union"]["1"] == 32 and ffn["union"]["2"] == 16 and ffn["filled"]["2"] == 16
    sentiment = subnetwork_of(experts["sentiment"])
    layer1 = sentiment.slices[LAYER.format(1) + "intermediate.dense.weight"].index[0]  # type: ignore[union-attr]
    weight = "encoder.encoder.layer.1.intermediate.dense.weight"
    torch.testing.assert_close(out.handle.model.state_dict()[weight], before[weight][layer1], rtol=0, atol=0)
    assert (
        out.details["params"]["after"]
        < vocab_only.details["params"]["after"]
        < out.details["params"]["before"]
    )
    assert out.handle.subnetwork is None  # a new large version numbers its own units
    path = out.handle.save(tmp_path / "candidate", Provenance(name="large:v1"))
    loaded = load_handle(path)
    for head in sorted(large.labels):
        texts = toy_task(head, 12, seed=4)[0]
        probs = out.handle.predict_proba(texts, head)
        assert probs.shape == (12, 2)
        np.testing.assert_allclose(loaded.predict_proba(texts, head), probs, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in large.model.state_dict().items())  # champion intact


def test_refusals_say_what_to_do(large: EncoderHandle, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expert 'topic' has no recorded sub-network.*drop swarm_structure"):
        swarm_structure(context(large, {"topic": copy.deepcopy(large)}, tmp_path), StructureConfig())
    other = prune_encoder(tiny_large(num_layers=4, intermediate_size=48), PruneConfig(layers=[0]))
    with pytest.raises(ConfigError, match="shapes differ from the champion's.*drop swarm_structure"):
        swarm_structure(context(large, {"topic": other}, tmp_path), StructureConfig())
    with pytest.raises(ConfigError, match="heads cannot be cut while the hidden width is kept"):
        validate(StructureConfig, {"axes": ["vocab", "heads"]}, source="swarm_structure")
    with pytest.raises(ConfigError, match="finetune: null"):
        swarm_structure(
            context(large, {"topic": student(large, "topic", layers=[0])}, tmp_path),
            validate(StructureConfig, {"finetune": quick_dict(epochs=1)}),
        )


def test_an_optional_finetune_on_the_public_slices(large: EncoderHandle, tmp_path: Path) -> None:
    ctx = context(large, {"topic": student(large, "topic", vocab=200, ffn=0.5)}, tmp_path)
    ctx.public = {"topic": toy_task("topic", 16, seed=5)}
    config = validate(StructureConfig, {"axes": ["vocab", "ffn"], "finetune": quick_dict(epochs=1)})
    out = swarm_structure(ctx, config)
    assert out.metrics["steps"] == 1.0 and out.handle.model.encoder.config.intermediate_size == 32
