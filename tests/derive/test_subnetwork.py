"""The sub-network record of a pruned student: exact coordinates in the original large model, on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder
from fanbu.derive.prune.subnetwork import SubNetwork, load_subnetwork, subnetwork_of
from fanbu.derive.quantize import QuantizeConfig, save_deployment
from fanbu.errors import ModelError
from fanbu.models import EncoderHandle, load_handle
from fanbu.models.artefact import Provenance, verify_weights

TEXTS = [
    "the patients were happy with the treatment",
    "computer hardware prices fell again",
    "religion and politics, again and again!",
    "the team won the game at home",
    "doctor said the drug risk is low",
    "space science needs better software",
]
QUERY = "encoder.encoder.layer.0.attention.self.query.weight"


@pytest.fixture
def large() -> EncoderHandle:
    """A tiny BERT (hidden 32, 2 layers, 4 heads of 8, FFN 64) with one head, named like a registered model."""
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=3)
    handle.add_head("topic", ["a", "b", "c"], seed=0)
    handle.provenance = Provenance(name="large:v0")
    handle.model.eval()
    return handle


def assert_exact(record: SubNetwork, large: EncoderHandle, student: EncoderHandle) -> None:
    """Slicing the large model by the record (and scaling) gives the student's state, bit for bit."""
    state = student.model.state_dict()
    taken = record.take(large.model.state_dict())
    assert sorted(taken) == sorted(state) == sorted(record.start)
    for name, tensor in state.items():
        assert torch.equal(taken[name], tensor), name
        assert torch.equal(record.start[name], tensor), name


def test_a_oneshot_prune_records_where_every_tensor_came_from(large: EncoderHandle) -> None:
    config = PruneConfig(layers=[1], heads=2, hidden=16, ffn=0.5, vocab=300)
    student = prune_encoder(large, config, Calibration(TEXTS))
    record = subnetwork_of(student)
    assert record is not None and record.source == "large:v0"
    assert_exact(record, large, student)
    embedding = record.slices["encoder.embeddings.word_embeddings.weight"]
    assert embedding.shape == (len(large.tokenizer), 32)
    assert [len(i) for i in embedding.index] == [300, 16]  # vocabulary rows, hidden columns
    assert record.slices[QUERY].source == QUERY.replace("layer.0", "layer.1")  # layers renumbered
    assert record.slices["heads.topic.weight"].index[0] is None  # every label row, kept hidden columns
    assert subnetwork_of(large) is None


def test_two_iterative_rounds_compose_into_the_original_coordinates(large: EncoderHandle) -> None:
    config = PruneConfig(heads=2, head_dim=4, hidden=8, layers=[1], vocab=300, schedule="iterative", steps=2)
    student = prune_encoder(large, config, Calibration(TEXTS))
    record = subnetwork_of(student)
    assert record is not None
    assert_exact(record, large, student)
    assert record.slices[QUERY].scale == (math.sqrt(6 / 8), math.sqrt(4 / 6))  # head_dim 8 -> 6 -> 4
    assert record.slices[QUERY].factor == pytest.approx(math.sqrt(4 / 8))
    assert record.slices["encoder.embeddings.word_embeddings.weight"].index[0] is not None


def test_recovery_between_rounds_counts_as_change_since_the_start(large: EncoderHandle) -> None:
    def recover(handle: EncoderHandle, _: int) -> None:
        with torch.no_grad():
            handle.model.encoder.encoder.layer[0].intermediate.dense.weight.add_(0.5)

    config = PruneConfig(ffn=16, heads=2, hidden=16, schedule="iterative", steps=2)
    student = prune_encoder(large, config, recover=recover)
    record = subnetwork_of(student)
    assert record is not None
    taken = record.take(large.model.state_dict())
    assert all(torch.equal(taken[k], v) for k, v in record.start.items())  # the start is the original cut
    name = "encoder.encoder.layer.0.intermediate.dense.weight"
    assert torch.allclose(student.model.state_dict()[name] - record.start[name], torch.tensor(0.5))


def test_a_second_prune_of_a_student_composes_its_record(large: EncoderHandle) -> None:
    first = prune_encoder(large, PruneConfig(heads=3, head_dim=6, hidden=18, vocab=300), Calibration(TEXTS))
    second = prune_encoder(first, PruneConfig(layers=1, heads=2, head_dim=4, hidden=8))
    record = subnetwork_of(second)
    assert record is not None and record.source == "large:v0"
    assert_exact(record, large, second)


def test_the_record_round_trips_through_safetensors(large: EncoderHandle, tmp_path: Path) -> None:
    student = prune_encoder(
        large, PruneConfig(layers=1, heads=2, head_dim=4, hidden=8, vocab=300), Calibration(TEXTS)
    )
    path = student.save(tmp_path / "student", Provenance(name="topic.prune:v1"))
    assert {"subnetwork.json", "subnetwork.safetensors"} <= {p.name for p in path.iterdir()}
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))  # never pickle
    assert "subnetwork.safetensors" in json.loads((path / "fanbu.json").read_text())["weights"]
    verify_weights(path)
    meta = json.loads((path / "subnetwork.json").read_text())
    assert meta["source"] == "large:v0" and meta["tensors"][QUERY]["scale"] == [math.sqrt(4 / 8)]
    for loaded in (load_subnetwork(path), subnetwork_of(load_handle(path))):  # type: ignore[arg-type]
        assert loaded is not None
        assert_exact(loaded, large, student)
        for name, piece in loaded.slices.items():
            for got, want in zip(piece.index, subnetwork_of(student).slices[name].index, strict=True):  # type: ignore[union-attr]
                assert (got is None and want is None) or (got.dtype == torch.int64 and torch.equal(got, want))


def test_later_saves_of_the_same_student_keep_the_record(large: EncoderHandle, tmp_path: Path) -> None:
    student = prune_encoder(large, PruneConfig(heads=2, hidden=16), Calibration(TEXTS))
    with torch.no_grad():  # training in place (distill, finetune) keeps the handle and its record
        student.model.heads["topic"].bias.add_(1.0)
    config = QuantizeConfig(onnx=False, onnx_int8=False)
    save_deployment(student, tmp_path / "deployed", config, Provenance(name="topic.quantize:v1"), TEXTS)
    twin = load_handle(tmp_path / "deployed")  # the fp32 handle inside the deployment
    record = subnetwork_of(twin)  # type: ignore[arg-type]
    assert record is not None
    assert_exact(record, large, prune_encoder(large, PruneConfig(heads=2, hidden=16), Calibration(TEXTS)))
    assert torch.equal(twin.model.heads["topic"].bias - record.start["heads.topic.bias"], torch.ones(3))


def test_a_model_without_a_record_gives_none_and_a_damaged_one_an_error(
    large: EncoderHandle, tmp_path: Path
) -> None:
    path = large.save(tmp_path / "large", Provenance(name="large:v0"))
    assert load_subnetwork(path) is None and subnetwork_of(load_handle(path)) is None  # type: ignore[arg-type]
    student = prune_encoder(large, PruneConfig(heads=2, hidden=16), Calibration(TEXTS))
    saved = student.save(tmp_path / "student", Provenance(name="s:v1"))
    (saved / "subnetwork.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="re-save the model"):
        load_subnetwork(saved)
    assert student.subnetwork is not None
    del student.subnetwork.meta["tensors"][QUERY]["source"]
    with pytest.raises(ModelError, match="damaged.*prune stage"):
        subnetwork_of(student)
