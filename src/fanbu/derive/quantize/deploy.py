"""A deployment directory: the fp32 handle, its ONNX graphs, and the checks that tie them together.

Layout (the directory also loads as a plain saved handle with ``EncoderHandle.load``)::

    config.json model.safetensors heads.safetensors tokenizer* handle.json   # the fp32 handle
    fanbu.json README.md recipe.resolved.yaml                                  # provenance, "quantized"
    model.onnx model.int8.onnx                                                 # fp32 graph, int8 graph
    deployment.json                                                            # checks, sizes, sha256

``model.int8.onnx`` is the deployable artefact. The torch int8 runtime is not stored: packed int8
torch weights are not safetensors-serialisable, so :func:`load_deployment` quantises the fp32 weights
again on load (deterministic: the same weights give the same int8 model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fanbu.derive.quantize.config import QuantizeConfig
from fanbu.derive.quantize.graph import (
    assert_parity,
    export_onnx,
    graph_opset,
    onnx_max_diffs,
    quantize_onnx_int8,
)
from fanbu.errors import ModelError
from fanbu.models.artefact import Provenance, model_directory, write_provenance
from fanbu.models.deployment import (
    DEPLOYMENT_JSON,
    ONNX_FILE,
    ONNX_INT8_FILE,
    write_manifest,
)
from fanbu.models.encoder import EncoderHandle
from fanbu.models.int8 import is_int8, quantize_int8
from fanbu.models.onnx import OnnxClassifier
from fanbu.models.predict import Predictor

FORMAT_VERSION = 1


@dataclass
class DeploymentReport:
    """What :func:`save_deployment` wrote and how closely each runtime follows the fp32 model."""

    directory: Path
    onnx_max_diff: float | None  # max |logit diff| fp32 ONNX vs PyTorch; None without ONNX
    onnx_int8_agreement: float | None  # share of (text, head) argmax equal to fp32; None without int8 ONNX
    sizes: dict[str, int]  # file name -> bytes, every file but deployment.json
    torch_int8_agreement: float | None = None  # the same for the torch int8 runtime
    runtimes: list[str] = dataclasses.field(default_factory=list)


def argmax_agreement(
    reference: Predictor, other: Predictor, texts: Sequence[str], heads: Sequence[str]
) -> dict[str, float]:
    """Share of ``texts`` on which ``other`` predicts the same label as ``reference``, per head."""
    return {
        head: float((reference.predict(texts, head) == other.predict(texts, head)).mean()) for head in heads
    }


def _mean(per_head: dict[str, float]) -> float:
    return sum(per_head.values()) / len(per_head)


def save_deployment(
    handle: EncoderHandle,
    directory: str | Path,
    config: QuantizeConfig,
    provenance: Provenance,
    check_texts: Sequence[str],
    overwrite: bool = False,
) -> DeploymentReport:
    """Write the fp32 handle, its ONNX graphs and ``deployment.json`` into ``directory``, atomically.

    Args:
        handle: The fp32 model to deploy (with at least one head).
        directory: Where the deployment goes; it must not exist unless ``overwrite``.
        config: Which runtimes to build and the parity tolerance.
        provenance: Where the model came from; saved with ``base_model_relation="quantized"``.
        check_texts: Texts for the parity and agreement checks (the first ``config.check_texts``).
        overwrite: Replace an existing directory.

    Raises:
        ModelError: the handle is already int8 or has no heads, or no check texts were given.
        OnnxParityError: the fp32 graph differs from PyTorch by more than ``config.atol``.
    """
    if is_int8(handle.model):
        raise ModelError("save_deployment needs the fp32 handle, not a quantize_int8 one; pass the original")
    if not handle.labels:
        raise ModelError("the handle has no heads to deploy; add one with handle.add_head(name, labels)")
    texts = list(check_texts)[: config.check_texts]
    if not texts and (config.onnx or config.int8):
        raise ModelError("no check_texts: pass a few texts of the domain (validation texts) for the checks")
    saved_as = dataclasses.replace(
        provenance,
        base_model_relation="quantized",
        extra={**provenance.extra, "quantize": config.model_dump()},
    )
    with model_directory(directory, overwrite) as tmp:
        previous = handle.provenance
        try:
            handle.save(tmp, saved_as, overwrite=True)  # replaces the empty temp dir with the handle layout
        finally:
            handle.provenance = (
                previous  # save() records the provenance on the handle; keep the input as it was
            )
        report, per_head = _build_runtimes(handle, tmp, config, texts)
        report.directory = Path(directory)
        checks = {
            "onnx_max_diff": report.onnx_max_diff,
            "onnx_int8_agreement": report.onnx_int8_agreement,
            "torch_int8_agreement": report.torch_int8_agreement,
        }
        metrics = {**saved_as.metrics, "deployment": {k: v for k, v in checks.items() if v is not None}}
        write_provenance(tmp, dataclasses.replace(saved_as, metrics=metrics), EncoderHandle.kind)
        report.sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT_VERSION,
            "runtimes": report.runtimes,
            "deployable": ONNX_INT8_FILE if config.onnx_int8 else ONNX_FILE if config.onnx else None,
            "labels": handle.labels,
            "max_length": handle.max_length,
            "truncation": handle.truncation,
            "config": config.model_dump(),
            "opset": graph_opset(tmp / ONNX_FILE) if config.onnx else None,
            "check_texts": len(texts),
            **checks,
            "per_head": per_head,
            "sizes": report.sizes,
        }
        write_manifest(tmp, manifest)
    return report


def _build_runtimes(
    handle: EncoderHandle, tmp: Path, config: QuantizeConfig, texts: list[str]
) -> tuple[DeploymentReport, dict[str, dict[str, float]]]:
    """Write the ONNX graphs into ``tmp`` and check every runtime against the fp32 handle."""
    heads = list(handle.labels)
    report = DeploymentReport(tmp, None, None, {}, runtimes=["torch"])
    per_head: dict[str, dict[str, float]] = {}
    if config.int8:
        per_head["torch_int8_agreement"] = argmax_agreement(handle, quantize_int8(handle), texts, heads)
        report.torch_int8_agreement = _mean(per_head["torch_int8_agreement"])
        report.runtimes.append("torch_int8")
    if config.onnx:
        export_onnx(handle, tmp / ONNX_FILE, opset=config.opset, exporter=config.exporter)
        per_head["onnx_max_diff"] = onnx_max_diffs(handle, tmp / ONNX_FILE, texts)
        report.onnx_max_diff = assert_parity(per_head["onnx_max_diff"], tmp / ONNX_FILE, config.atol)
        report.runtimes.append("onnx")
    if config.onnx_int8:
        quantize_onnx_int8(tmp / ONNX_FILE, tmp / ONNX_INT8_FILE)
        int8 = OnnxClassifier.from_handle(handle, tmp / ONNX_INT8_FILE)
        per_head["onnx_int8_agreement"] = argmax_agreement(handle, int8, texts, heads)
        report.onnx_int8_agreement = _mean(per_head["onnx_int8_agreement"])
        report.runtimes.append("onnx_int8")
    return report, per_head


__all__ = ["DEPLOYMENT_JSON", "DeploymentReport", "argmax_agreement", "save_deployment"]
