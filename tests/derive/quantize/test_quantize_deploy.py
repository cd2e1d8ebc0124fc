"""save_deployment / load_deployment: layout, provenance, the four runtimes, and damaged deployments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fanbu.derive.quantize import (
    RUNTIMES,
    OnnxParityError,
    QuantizeConfig,
    is_int8,
    quantize_int8,
    save_deployment,
)
from fanbu.derive.quantize import deploy as deploy_module
from fanbu.derive.quantize.deploy import DeploymentReport
from fanbu.errors import ModelError
from fanbu.models import EncoderHandle, Provenance, load_deployment, load_handle, read_provenance
from fanbu.models.onnx import OnnxClassifier

Deployment = tuple[Path, DeploymentReport]


def test_layout_report_and_manifest(deployment: Deployment, texts: list[str]) -> None:
    directory, report = deployment
    names = {p.name for p in directory.iterdir()}
    assert {"model.safetensors", "heads.safetensors", "handle.json", "fanbu.json", "tokenizer.json"} <= names
    assert {"model.onnx", "model.int8.onnx", "deployment.json", "README.md"} <= names
    assert report.directory == directory and report.runtimes == ["torch", "torch_int8", "onnx", "onnx_int8"]
    assert report.onnx_max_diff is not None and 0.0 <= report.onnx_max_diff <= 1e-4
    assert report.onnx_int8_agreement is not None and 0.75 <= report.onnx_int8_agreement <= 1.0
    assert report.torch_int8_agreement is not None and 0.75 <= report.torch_int8_agreement <= 1.0
    assert report.sizes["model.int8.onnx"] < report.sizes["model.onnx"]
    assert report.sizes["model.onnx"] == (directory / "model.onnx").stat().st_size
    manifest = json.loads((directory / "deployment.json").read_text())
    assert manifest["deployable"] == "model.int8.onnx" and manifest["opset"] == 17
    assert manifest["labels"] == {"topic": ["sci", "talk", "rec"], "sentiment": ["neg", "pos"]}
    assert manifest["check_texts"] == len(texts) and manifest["sizes"] == report.sizes
    assert set(manifest["per_head"]["onnx_max_diff"]) == {"topic", "sentiment"}
    assert set(manifest["sha256"]) == {"model.onnx", "model.int8.onnx"}


def test_provenance_says_quantized_and_the_directory_reloads_as_a_handle(
    deployment: Deployment, wide_handle: EncoderHandle, texts: list[str]
) -> None:
    directory, report = deployment
    provenance, kind = read_provenance(directory)
    assert kind == "encoder" and provenance.base_model_relation == "quantized"
    assert provenance.parents == ["distilled-1"] and provenance.extra["quantize"]["opset"] == 17
    assert provenance.metrics["deployment"]["onnx_max_diff"] == report.onnx_max_diff
    assert "base_model_relation: quantized" in (directory / "README.md").read_text()
    reloaded = load_handle(directory)
    assert isinstance(reloaded, EncoderHandle)
    assert np.allclose(reloaded.predict_proba(texts, "topic"), wide_handle.predict_proba(texts, "topic"))
    assert wide_handle.provenance is None  # saving did not touch the input handle


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_predicts(deployment: Deployment, texts: list[str], runtime: str) -> None:
    predictor = load_deployment(deployment[0], runtime, intra_op_threads=1)
    assert predictor.predict_proba(texts, "topic").shape == (len(texts), 3)
    assert predictor.predict(texts, "sentiment").shape == (len(texts),)
    assert set(predictor.labels) == {"topic", "sentiment"}
    assert isinstance(predictor, OnnxClassifier) == runtime.startswith("onnx")
    if runtime == "torch_int8":
        assert isinstance(predictor, EncoderHandle) and is_int8(predictor.model)


def test_fp32_onnx_and_torch_agree(deployment: Deployment, texts: list[str]) -> None:
    onnx = load_deployment(deployment[0], "onnx")
    torch_fp32 = load_deployment(deployment[0], "torch")
    for head in ("topic", "sentiment"):
        assert (onnx.predict(texts, head) == torch_fp32.predict(texts, head)).all()
        assert np.abs(onnx.predict_proba(texts, head) - torch_fp32.predict_proba(texts, head)).max() < 1e-5
    default = OnnxClassifier.load(deployment[0])  # the deployable graph: int8
    assert default.predict(texts, "topic").shape == (len(texts),)


def test_torch_only_deployment_refuses_onnx_runtimes(
    handle: EncoderHandle, texts: list[str], tmp_path: Path
) -> None:
    config = QuantizeConfig(onnx=False, onnx_int8=False)
    report = save_deployment(handle, tmp_path / "d", config, Provenance(), texts)
    assert report.runtimes == ["torch", "torch_int8"] and report.onnx_max_diff is None
    assert not (tmp_path / "d" / "model.onnx").exists()
    assert load_deployment(tmp_path / "d", "torch_int8").predict(texts, "topic").shape == (len(texts),)
    with pytest.raises(ModelError, match="runtime 'onnx_int8' was not written .*enabled in QuantizeConfig"):
        load_deployment(tmp_path / "d", "onnx_int8")
    with pytest.raises(ModelError, match="saved without ONNX \\(onnx: false\\)"):
        OnnxClassifier.load(tmp_path / "d")
    with pytest.raises(ModelError, match="already exists; choose another path or pass overwrite=True"):
        save_deployment(handle, tmp_path / "d", config, Provenance(), texts)


def test_corrupt_or_missing_files_are_reported(deployment: Deployment, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(deployment[0], tmp_path / "copy"))
    int8 = copy / "model.int8.onnx"
    int8.write_bytes(int8.read_bytes()[:1000])
    with pytest.raises(ModelError, match="model.int8.onnx: corrupt or truncated .*run save_deployment again"):
        load_deployment(copy, "onnx_int8")
    (copy / "model.onnx").unlink()
    with pytest.raises(ModelError, match="model.onnx: listed in deployment.json but missing; restore the file or run save_deployment again"):
        load_deployment(copy, "onnx")
    with pytest.raises(ModelError, match="unknown runtime 'tflite'; pick one of onnx_int8, onnx"):
        load_deployment(copy, "tflite")
    (copy / "deployment.json").write_text("{not json")
    with pytest.raises(ModelError, match="deployment.json: not valid JSON"):
        load_deployment(copy, "torch")
    with pytest.raises(ModelError, match="is not a deployment; write one with save_deployment"):
        load_deployment(tmp_path, "torch")


def test_bad_inputs_to_save_deployment(handle: EncoderHandle, texts: list[str], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="needs the fp32 handle, not a quantize_int8 one"):
        save_deployment(quantize_int8(handle), tmp_path / "a", QuantizeConfig(), Provenance(), texts)
    with pytest.raises(ModelError, match="no check_texts: pass a few texts of the domain"):
        save_deployment(handle, tmp_path / "b", QuantizeConfig(), Provenance(), [])
    with pytest.raises(ModelError, match="the handle has no heads to deploy"):
        save_deployment(EncoderHandle.tiny(), tmp_path / "c", QuantizeConfig(), Provenance(), texts)
    assert list(tmp_path.iterdir()) == []


def test_failed_parity_leaves_no_directory(
    handle: EncoderHandle, exported: Path, texts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy_module, "export_onnx", lambda h, path, opset, exporter: shutil.copy(exported, path))
    monkeypatch.setattr(deploy_module, "onnx_max_diffs", lambda h, path, t: {"topic": 0.5, "sentiment": 0.0})
    config = QuantizeConfig(int8=False, onnx_int8=False)
    with pytest.raises(OnnxParityError, match="head 'topic' differs from PyTorch by 0.5 > atol 0.0001"):
        save_deployment(handle, tmp_path / "d", config, Provenance(), texts)
    assert list(tmp_path.iterdir()) == []
