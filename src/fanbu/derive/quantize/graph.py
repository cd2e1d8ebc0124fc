"""ONNX export of an encoder handle, its parity check against PyTorch, and int8 graph quantisation.

One graph serves every head: inputs ``input_ids`` and ``attention_mask`` of shape ``(batch, sequence)``
with both axes dynamic, and one output ``logits_<head>`` of shape ``(batch, num_labels)`` per head.

Two exporters:

- ``fused`` (default): torch's TorchScript exporter on the model with eager attention, then
  onnxruntime's BERT fusion passes, which turn each layer's attention into one ``Attention`` kernel and
  fuse embeddings + layer norm, residual + layer norm and bias + GELU. On a two-layer MiniLM student at
  256 tokens this made the int8 graph about 1.7x faster at batch 1 than the unfused one.
- ``dynamo``: ``torch.onnx.export(dynamo=True)``; its graph spells attention out op by op, which the
  fusion passes do not recognise.

Either way the graph is checked against PyTorch before it is deployed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer as fusion
from torch import Tensor, nn

from fanbu.errors import ModelError
from fanbu.io import atomic_write_bytes
from fanbu.models.encoder import EncoderClassifier, EncoderHandle
from fanbu.models.int8 import is_int8
from fanbu.models.onnx import INPUTS, OUTPUT_PREFIX, open_session, session_heads

Exporter = Literal["fused", "dynamo"]
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for a single-file ONNX model
_SAMPLE = ["an example sentence to trace the graph with", "short"]  # batch 2, unequal lengths


class OnnxParityError(ModelError):
    """The exported graph's logits differ from PyTorch's by more than the tolerance."""


class _AllHeads(nn.Module):
    """The classifier with every chosen head applied to one pooled embedding."""

    def __init__(self, model: EncoderClassifier, heads: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(heads)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        pooled = self.model.embed(input_ids, attention_mask)  # (batch, hidden)
        return tuple(self.model.heads[name](pooled) for name in self.names)  # each (batch, num_labels)


def _pick_heads(handle: EncoderHandle, heads: Sequence[str] | None) -> list[str]:
    chosen = list(handle.labels) if heads is None else list(heads)
    if not chosen:
        raise ModelError("no heads to export; add one with handle.add_head(name, labels) first")
    unknown = [h for h in chosen if h not in handle.labels]
    if unknown:
        raise ModelError(f"unknown heads {unknown}; the handle has {', '.join(handle.labels) or 'none'}")
    return chosen


def export_onnx(
    handle: EncoderHandle,
    path: str | Path,
    heads: Sequence[str] | None = None,
    opset: int = 17,
    exporter: Exporter = "fused",
) -> Path:
    """Export the encoder and ``heads`` (default: all) as one ONNX graph, written atomically to ``path``."""
    names = _pick_heads(handle, heads)
    if is_int8(handle.model):
        raise ModelError(
            "the handle holds torch int8 layers, which ONNX cannot express; export the fp32 handle and "
            "quantise the graph with quantize_onnx_int8"
        )
    if exporter == "fused":
        return _export_fused(handle, Path(path), names, opset)
    if exporter != "dynamo":
        raise ModelError(f"exporter must be 'fused' or 'dynamo', got {exporter!r}")
    device = next(handle.model.parameters()).device
    sample = {k: v.to(device) for k, v in handle.tokenize(_SAMPLE).items()}  # each (2, seq)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    was_training = handle.model.training
    try:
        with warnings.catch_warnings():
            # torch's own notices about its internals: nothing a caller can act on
            warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
            warnings.filterwarnings(
                "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
            )
            program = torch.onnx.export(
                _AllHeads(handle.model, names).eval(),
                (sample["input_ids"], sample["attention_mask"]),
                None,
                input_names=list(INPUTS),
                output_names=[OUTPUT_PREFIX + n for n in names],
                opset_version=opset,
                dynamic_shapes=axes,
                dynamo=True,
                verbose=False,
            )
    finally:
        handle.model.train(was_training)
    proto = program.model_proto
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise ModelError(f"the ONNX graph is {proto.ByteSize()} bytes, over protobuf's 2 GiB; prune it first")
    return atomic_write_bytes(path, proto.SerializeToString())


def _export_fused(handle: EncoderHandle, path: Path, names: list[str], opset: int) -> Path:
    """TorchScript export with eager attention, then onnxruntime's BERT fusion, written atomically."""
    config = handle.model.encoder.config
    device = next(handle.model.parameters()).device
    sample = {k: v.to(device) for k, v in handle.tokenize(_SAMPLE).items()}  # each (2, seq)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    was_training, attention = handle.model.training, config._attn_implementation
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx"
        try:
            config._attn_implementation = "eager"  # the attention pattern the fusion passes recognise
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
                torch.onnx.export(
                    _AllHeads(handle.model, names).eval(),
                    (sample["input_ids"], sample["attention_mask"]),
                    str(raw),
                    input_names=list(INPUTS),
                    output_names=[OUTPUT_PREFIX + n for n in names],
                    opset_version=opset,
                    dynamic_axes=axes,
                    dynamo=False,
                )
        finally:
            config._attn_implementation = attention
            handle.model.train(was_training)
        optimized = fusion.optimize_model(
            str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
        optimized.save_model_to_file(str(fused))
        return atomic_write_bytes(path, fused.read_bytes())


def graph_opset(path: str | Path) -> int:
    """The default-domain opset of an ONNX file (torch may keep a newer one when down-conversion fails)."""
    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def onnx_max_diffs(handle: EncoderHandle, path: str | Path, texts: Sequence[str]) -> dict[str, float]:
    """Max |logit difference| between onnxruntime and PyTorch for each head in the graph.

    Texts run as one batch and the first text alone, so both dynamic axes take two sizes.
    """
    if len(texts) == 0:
        raise ModelError("no texts for the ONNX parity check; pass at least one")
    session = open_session(path)
    heads = session_heads(session, path)
    missing = [h for h in heads if h not in handle.labels]
    if missing:
        raise ModelError(f"{path}: graph has heads {missing} that the handle lacks; export from this handle")
    device = next(handle.model.parameters()).device
    diffs = dict.fromkeys(heads, 0.0)
    was_training = handle.model.training
    handle.model.eval()
    try:
        for batch in (list(texts), list(texts[:1])):
            enc = handle.tokenize(batch)  # each (batch, seq)
            feed = {k: v.numpy().astype(np.int64) for k, v in enc.items()}
            outputs = session.run([OUTPUT_PREFIX + h for h in heads], feed)  # each (batch, num_labels)
            with torch.no_grad():
                for head, got in zip(heads, outputs, strict=True):
                    ref = handle.model(**{k: v.to(device) for k, v in enc.items()}, head=head)
                    diff = float(np.abs(got - ref.float().cpu().numpy()).max())
                    diffs[head] = max(diffs[head], diff)
    finally:
        handle.model.train(was_training)
    return diffs


def check_onnx(handle: EncoderHandle, path: str | Path, texts: Sequence[str], atol: float = 1e-4) -> float:
    """Run the graph and PyTorch on ``texts``; return the max |logit difference| over all heads.

    Raises:
        OnnxParityError: a head differs by more than ``atol`` (the message names it and the difference).
    """
    if atol < 0:
        raise ModelError(f"atol must be >= 0, got {atol}")
    return assert_parity(onnx_max_diffs(handle, path, texts), path, atol)


def assert_parity(diffs: dict[str, float], path: str | Path, atol: float) -> float:
    """The largest of the per-head ``diffs``, after checking each is within ``atol``."""
    for head, diff in diffs.items():
        if diff > atol:
            raise OnnxParityError(
                f"{path}: head {head!r} differs from PyTorch by {diff:.3g} > atol {atol:.3g}; re-export "
                "with export_onnx (same handle, same weights) or raise atol if the opset explains it"
            )
    return max(diffs.values(), default=0.0)


def quantize_onnx_int8(path: str | Path, out: str | Path) -> Path:
    """Dynamically quantise an ONNX graph's weights to int8 (onnxruntime, QInt8), written atomically.

    Weights of MatMul/Gather (embeddings included) become int8 with per-channel scales; activations
    are quantised per batch at run time.
    """
    source, target = Path(path), Path(out)
    open_session(source)  # a clear error for a missing or damaged graph
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        # Per-channel scales: on MiniLM-L6 they raised argmax agreement with fp32 from 0.81 to 0.95 (64
        # texts, untrained head) at the same size and speed.
        # DefaultTensorType: the fused graph's com.microsoft kernels escape ONNX shape inference.
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
