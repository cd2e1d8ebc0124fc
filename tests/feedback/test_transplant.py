"""Sub-network transplant: students' changes land exactly at their recorded large-model coordinates."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from _merge_fixtures import tiny_large, toy_task
from feedback_helpers import quick

from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder
from fanbu.derive.prune.subnetwork import Slice, subnetwork_of
from fanbu.errors import ConfigError
from fanbu.feedback import FeedbackContext, get_strategy
from fanbu.feedback.shared.weights import SelectionConfig
from fanbu.feedback.strategies.transplant import TransplantConfig, transplant_strategy
from fanbu.models import EncoderHandle, load_handle
from fanbu.models.artefact import Provenance

NO_SELECTION = SelectionConfig(enabled=False)
TEXTS = toy_task("sentiment", 32, seed=1)[0] + toy_task("topic", 32, seed=1)[0]
NARROW = PruneConfig(layers=[1], heads=2, head_dim=4, hidden=8, ffn=0.5, vocab=200)  # queries scaled


@pytest.fixture(scope="module")
def large() -> EncoderHandle:
    """The champion: a tiny encoder with heads sentiment, topic and faith (do not modify)."""
    return tiny_large()


def student(
    large: EncoderHandle, config: PruneConfig, move: float | None = None, seed: int = 0
) -> EncoderHandle:
    """A student pruned from ``large``; its weights then move by ``move`` everywhere, or randomly (``None``)."""
    pruned = prune_encoder(large, config, Calibration(TEXTS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in pruned.model.state_dict().values():
            tensor.add_(move if move is not None else 0.01 * torch.randn(tensor.shape, generator=generator))
    return pruned


def context(large: EncoderHandle, experts: dict[str, EncoderHandle], tmp_path: Path) -> FeedbackContext:
    return FeedbackContext(large=large, experts=experts, public={}, work_dir=tmp_path)


def run(large: EncoderHandle, experts: dict[str, EncoderHandle], tmp_path: Path, **settings) -> EncoderHandle:
    config = TransplantConfig(selection=NO_SELECTION, **settings)
    return transplant_strategy(context(large, experts, tmp_path), config).handle


def test_transplant_is_registered_for_students_of_any_shape() -> None:
    info = get_strategy("transplant")
    assert info.config is TransplantConfig and "same_architecture" not in info.capabilities


@pytest.mark.parametrize("method", ["average", "task_arithmetic", "ties", "dare_ties"])
def test_a_student_that_did_not_change_transplants_as_nothing(large, method: str, tmp_path: Path) -> None:
    candidate = run(large, {"sentiment": student(large, NARROW, move=0.0)}, tmp_path, method=method)
    before = large.model.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in candidate.model.state_dict().items())


def test_a_known_change_lands_exactly_at_the_recorded_coordinates(large, tmp_path: Path) -> None:
    expert = student(large, NARROW)
    record = subnetwork_of(expert)
    assert record is not None
    change = {k: v - record.start[k] for k, v in expert.model.state_dict().items()}
    candidate = run(large, {"sentiment": expert}, tmp_path, method="task_arithmetic", scaling=1.0)
    before, after = large.model.state_dict(), candidate.model.state_dict()
    touched = set()
    for name, piece in record.slices.items():
        if name.startswith("heads.") and not name.startswith("heads.sentiment."):
            continue  # only the expert's own domain head is transplanted
        moved = after[piece.source] - before[piece.source]
        at = Slice(piece.source, piece.shape, piece.index)  # the coordinates, unscaled
        torch.testing.assert_close(at.take(moved), change[name] / piece.factor, rtol=0, atol=1e-6)
        outside = ~piece.place(torch.ones_like(change[name])).bool()
        assert torch.equal(after[piece.source][outside], before[piece.source][outside])
        touched.add(piece.source)
    assert "encoder.encoder.layer.1.attention.self.query.weight" in touched  # a scaled tensor
    assert "encoder.encoder.layer.0.attention.self.query.weight" not in touched  # a dropped layer
    assert all(torch.equal(after[k], v) for k, v in before.items() if k not in touched)


def test_entries_are_averaged_over_the_students_that_cover_them(large, tmp_path: Path) -> None:
    first = student(large, PruneConfig(layers=[0]), move=0.01)
    second = student(large, PruneConfig(layers=[1]), move=-0.03)
    for method in ("average", "task_arithmetic"):
        candidate = run(large, {"sentiment": first, "topic": second}, tmp_path, method=method)
        moved = {k: v - large.model.state_dict()[k] for k, v in candidate.model.state_dict().items()}
        layer = "encoder.encoder.{}.output.dense.weight"
        torch.testing.assert_close(moved["encoder.embeddings.LayerNorm.bias"], torch.full((32,), -0.01))
        torch.testing.assert_close(moved[layer.format("layer.0")], torch.full((32, 64), 0.01))  # first only
        torch.testing.assert_close(moved[layer.format("layer.1")], torch.full((32, 64), -0.03))  # second only
        assert torch.equal(moved["heads.faith.bias"], torch.zeros(2))  # no expert's domain


def test_two_students_merge_with_ties(large, tmp_path: Path) -> None:
    first = student(large, PruneConfig(layers=[0], heads=2, hidden=16, ffn=0.5), seed=1)
    second = student(large, PruneConfig(layers=[1], heads=3, hidden=24), seed=2)
    experts = {"sentiment": first, "topic": second}
    out = transplant_strategy(
        context(large, experts, tmp_path),
        TransplantConfig(method="ties", density=0.5, selection=NO_SELECTION),
    )
    key = "encoder.encoder.layer.0.intermediate.dense.weight"  # first student only: half its entries kept
    moved = out.handle.model.state_dict()[key] - large.model.state_dict()[key]
    assert int((moved != 0).sum()) == int(0.5 * 32 * 16)
    assert out.details["method"] == "ties" and out.details["density"] == 0.5
    assert 0 < out.details["coverage"]["sentiment"] < out.details["coverage"]["topic"] < 1
    assert out.handle.predict_proba(TEXTS[:4], "topic").shape == (4, 2)


def test_a_student_reloaded_from_disk_and_a_finetune_run(large, tmp_path: Path) -> None:
    expert = student(large, NARROW)
    loaded = load_handle(expert.save(tmp_path / "student", Provenance(name="sentiment.prune:v1")))
    in_memory = run(large, {"sentiment": expert}, tmp_path)
    from_disk = run(large, {"sentiment": loaded}, tmp_path)  # type: ignore[dict-item]
    assert all(
        torch.equal(v, in_memory.model.state_dict()[k]) for k, v in from_disk.model.state_dict().items()
    )
    ctx = context(large, {"sentiment": expert}, tmp_path)
    ctx.public = {"sentiment": toy_task("sentiment", 16, seed=5)}
    config = TransplantConfig(selection=NO_SELECTION, finetune=quick(epochs=1))
    assert transplant_strategy(ctx, config).metrics["steps"] == 1.0


def test_refusals_say_what_to_do(large, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in large.model.state_dict().items()}
    with pytest.raises(
        ConfigError, match="'sentiment' has no recorded sub-network.*prune stage.*drop transplant"
    ):
        run(large, {"sentiment": copy.deepcopy(large)}, tmp_path)
    other = student(tiny_large(intermediate_size=48), PruneConfig(heads=2, hidden=16))
    with pytest.raises(
        ConfigError, match="shapes differ from the champion's.*prune stage from this champion"
    ):
        run(large, {"sentiment": other}, tmp_path)
    sibling = student(tiny_large(seed=1), PruneConfig(heads=2, hidden=16))  # same shapes, other weights
    with pytest.raises(ConfigError, match="weights differ.*require_same_weights: false"):
        run(large, {"sentiment": sibling}, tmp_path, require_same_weights=True)
    out = transplant_strategy(
        context(large, {"sentiment": sibling}, tmp_path), TransplantConfig(selection=NO_SELECTION)
    )
    assert out.details["sources"]["sentiment"]["same_weights"] is False
    assert all(torch.equal(v, before[k]) for k, v in large.model.state_dict().items())  # champion intact


def test_scalings_keep_the_lambda_best_on_validation_and_the_mildest_on_a_tie(large, tmp_path: Path) -> None:
    expert = student(large, NARROW, seed=3)
    ctx = context(large, {"sentiment": expert}, tmp_path)
    ctx.validation = {"sentiment": toy_task("sentiment", 24, seed=7)}
    out = transplant_strategy(ctx, TransplantConfig(selection=NO_SELECTION, scalings=[2.0, 0.5, 1.0]))
    chosen = out.details["scalings"]
    scores = {float(k): v for k, v in chosen["val_acc_mean"].items()}
    assert sorted(scores) == [0.5, 1.0, 2.0] and chosen["on"] == ["sentiment"]
    assert chosen["chosen"] == min(k for k, v in scores.items() if v == max(scores.values()))
    same = run(large, {"sentiment": expert}, tmp_path, scaling=chosen["chosen"])  # what that lambda builds
    assert all(torch.equal(v, same.model.state_dict()[k]) for k, v in out.handle.model.state_dict().items())
    unmoved = context(large, {"sentiment": student(large, NARROW, move=0.0)}, tmp_path)
    unmoved.validation = ctx.validation
    tie = transplant_strategy(unmoved, TransplantConfig(selection=NO_SELECTION, scalings=[1.0, 0.25]))
    assert tie.details["scalings"]["chosen"] == 0.25  # every lambda scores the same: the mildest is kept


def test_scalings_refusals_say_what_to_do(large, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="transplant.scalings: no validation split.*set scaling instead"):
        run(large, {"sentiment": student(large, NARROW)}, tmp_path, scalings=[0.5, 1.0])
    with pytest.raises(ValueError, match="give scaling .* or scalings"):
        TransplantConfig(scaling=0.5, scalings=[0.5, 1.0])
    with pytest.raises(ValueError, match="scalings must be positive"):
        TransplantConfig(scalings=[0.0, 1.0])
