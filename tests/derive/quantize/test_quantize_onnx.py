"""ONNX export: graph signature, parity with PyTorch on dynamic shapes, int8 size, damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fanbu.derive.quantize import (
    OnnxParityError,
    check_onnx,
    export_onnx,
    onnx_max_diffs,
    open_session,
    quantize_onnx_int8,
)
from fanbu.errors import ModelError
from fanbu.models import EncoderHandle
from fanbu.models.onnx import OnnxClassifier


def test_graph_has_dynamic_inputs_and_one_output_per_head(exported: Path) -> None:
    session = open_session(exported, intra_op_threads=1)
    inputs = {i.name: i for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for node in inputs.values():
        assert node.type == "tensor(int64)"
        assert all(isinstance(dim, str) for dim in node.shape)  # symbolic: batch and sequence
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert set(outputs) == {"logits_topic", "logits_sentiment"}
    assert outputs["logits_topic"][1] == 3 and outputs["logits_sentiment"][1] == 2
    assert isinstance(outputs["logits_topic"][0], str)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fp32_parity_per_head_for_several_batch_and_sequence_sizes(
    wide_handle: EncoderHandle, exported: Path, texts: list[str], batch: int
) -> None:
    chosen = texts[-batch:]  # the last text is the longest, the first ones vary
    diffs = onnx_max_diffs(wide_handle, exported, chosen)
    assert set(diffs) == {"topic", "sentiment"}
    assert all(diff <= 1e-4 for diff in diffs.values()), diffs
    assert check_onnx(wide_handle, exported, chosen, atol=1e-4) == max(diffs.values())


def test_onnx_classifier_matches_the_handle(
    wide_handle: EncoderHandle, exported: Path, texts: list[str]
) -> None:
    classifier = OnnxClassifier.from_handle(wide_handle, exported, intra_op_threads=1)
    for head in ("topic", "sentiment"):
        got = classifier.predict_proba(texts, head, batch_size=3)
        want = wide_handle.predict_proba(texts, head)
        assert got.shape == want.shape and np.allclose(got.sum(-1), 1.0, atol=1e-5)
        assert np.abs(got - want).max() < 1e-5
        assert (classifier.predict(texts, head) == wide_handle.predict(texts, head)).all()
    assert classifier.predict_proba([], "topic").shape == (0, 3)
    with pytest.raises(ModelError, match="unknown head 'colour'; heads: topic, sentiment"):
        classifier.predict(texts, "colour")
    with pytest.raises(ModelError, match="batch_size must be at least 1, got 0"):
        classifier.predict(texts, "topic", batch_size=0)


def test_int8_graph_is_smaller_and_close(
    wide_handle: EncoderHandle, exported: Path, texts: list[str], tmp_path: Path
) -> None:
    int8 = quantize_onnx_int8(exported, tmp_path / "sub" / "model.int8.onnx")
    assert int8.stat().st_size < 0.6 * exported.stat().st_size
    assert [p.name for p in int8.parent.iterdir()] == ["model.int8.onnx"]  # no temp file left behind
    classifier = OnnxClassifier.from_handle(wide_handle, int8)
    got = classifier.predict_proba(texts, "topic")
    assert np.abs(got - wide_handle.predict_proba(texts, "topic")).max() < 0.05


def test_export_of_a_subset_of_heads(handle: EncoderHandle, texts: list[str], tmp_path: Path) -> None:
    path = export_onnx(handle, tmp_path / "sentiment.onnx", heads=["sentiment"])
    assert [o.name for o in open_session(path).get_outputs()] == ["logits_sentiment"]
    classifier = OnnxClassifier.from_handle(handle, path)
    assert classifier.labels == {"sentiment": ["neg", "pos"]}
    assert check_onnx(handle, path, texts) <= 1e-4


def test_export_rejects_unknown_or_missing_heads(tmp_path: Path) -> None:
    bare = EncoderHandle.tiny()
    with pytest.raises(ModelError, match="no heads to export; add one with handle.add_head"):
        export_onnx(bare, tmp_path / "m.onnx")
    bare.add_head("topic", ["a", "b"])
    with pytest.raises(ModelError, match=r"unknown heads \['colour'\]; the handle has topic"):
        export_onnx(bare, tmp_path / "m.onnx", heads=["colour"])


def test_perturbed_graph_fails_the_parity_check(
    wide_handle: EncoderHandle, exported: Path, texts: list[str], tmp_path: Path
) -> None:
    model = onnx.load(str(exported))
    (bias,) = [t for t in model.graph.initializer if "topic" in t.name and "bias" in t.name]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1e-3, bias.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    diffs = onnx_max_diffs(wide_handle, tmp_path / "perturbed.onnx", texts)
    assert diffs["topic"] == pytest.approx(1e-3, rel=0.05) and diffs["sentiment"] <= 1e-4
    with pytest.raises(OnnxParityError, match=r"head 'topic' differs from PyTorch by 0\.001 > atol 0\.0001"):
        check_onnx(wide_handle, tmp_path / "perturbed.onnx", texts, atol=1e-4)


def test_atol_zero_fails_on_any_difference(
    wide_handle: EncoderHandle, exported: Path, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    run = ort.InferenceSession.run

    def nudged(self: ort.InferenceSession, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [out + np.float32(1e-6) for out in run(self, names, feed)]

    monkeypatch.setattr(ort.InferenceSession, "run", nudged)
    with pytest.raises(OnnxParityError, match="differs from PyTorch by .* > atol 0; re-export"):
        check_onnx(wide_handle, exported, texts, atol=0.0)
    with pytest.raises(ModelError, match="atol must be >= 0, got -1"):
        check_onnx(wide_handle, exported, texts, atol=-1)


def test_damaged_or_missing_files_give_clear_errors(
    wide_handle: EncoderHandle, exported: Path, texts: list[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported.read_bytes()[: exported.stat().st_size // 3])
    with pytest.raises(ModelError, match="broken.onnx: onnxruntime cannot load it .*export it again"):
        check_onnx(wide_handle, broken, texts)
    with pytest.raises(ModelError, match="broken.onnx: onnxruntime cannot load it"):
        quantize_onnx_int8(broken, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(ModelError, match="nowhere.onnx: ONNX file not found; export it with export_onnx"):
        OnnxClassifier.from_handle(wide_handle, tmp_path / "nowhere.onnx")
    with pytest.raises(ModelError, match="no texts for the ONNX parity check"):
        check_onnx(wide_handle, exported, [])
    with pytest.raises(ModelError, match="intra_op_threads must be at least 1"):
        open_session(exported, intra_op_threads=0)


def test_graph_with_heads_the_handle_lacks_is_refused(exported: Path, texts: list[str]) -> None:
    other = EncoderHandle.tiny(hidden_size=64, intermediate_size=256, num_heads=4)
    other.add_head("topic", ["a", "b", "c"])
    with pytest.raises(ModelError, match=r"graph has heads \['sentiment'\] that the handle lacks"):
        check_onnx(other, exported, texts)


@pytest.mark.parametrize("exporter", ["fused", "dynamo"])
def test_both_exporters_match_pytorch_and_only_fused_has_attention_kernels(
    handle: EncoderHandle, texts: list[str], tmp_path: Path, exporter: str
) -> None:
    path = export_onnx(handle, tmp_path / f"{exporter}.onnx", exporter=exporter)  # type: ignore[arg-type]
    assert check_onnx(handle, path, texts, atol=1e-4) <= 1e-4
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ("Attention" in ops) == (exporter == "fused")
    int8 = quantize_onnx_int8(path, tmp_path / f"{exporter}.int8.onnx")
    probs = OnnxClassifier.from_handle(handle, int8).predict_proba(texts, "topic")
    assert probs.shape == (len(texts), 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_exporter_is_refused(handle: EncoderHandle, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="exporter must be"):
        export_onnx(handle, tmp_path / "x.onnx", exporter="torchscript")  # type: ignore[arg-type]
