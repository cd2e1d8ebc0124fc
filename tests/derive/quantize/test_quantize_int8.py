"""Torch dynamic int8: every Linear quantised, the input untouched, predictions close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from fanbu.derive.quantize import export_onnx, is_int8, quantize_int8
from fanbu.errors import ModelError
from fanbu.models import EncoderHandle


def _count(module: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in module.modules())


def test_every_linear_is_quantized_and_the_input_is_untouched(handle: EncoderHandle) -> None:
    linears = _count(handle.model, nn.Linear)
    before = {k: v.clone() for k, v in handle.model.state_dict().items()}
    quantized = quantize_int8(handle)
    assert linears == 2 * 6 + 1 + 2  # 2 layers x (q, k, v, out, ffn in, ffn out) + pooler + 2 heads
    assert _count(quantized.model, nn.Linear) == 0
    assert _count(quantized.model, DynamicQuantizedLinear) == linears
    assert is_int8(quantized.model) and not is_int8(handle.model)
    assert _count(handle.model, nn.Linear) == linears
    after = handle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert quantized.labels == handle.labels and quantized.max_length == handle.max_length


def test_int8_predictions_agree_with_fp32(handle: EncoderHandle, texts: list[str]) -> None:
    quantized = quantize_int8(handle)
    for head, num_labels in (("topic", 3), ("sentiment", 2)):
        fp32 = handle.predict_proba(texts, head)
        int8 = quantized.predict_proba(texts, head)
        assert int8.shape == fp32.shape == (len(texts), num_labels)
        assert np.abs(int8 - fp32).max() < 0.05
        assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= 0.75


def test_an_int8_handle_cannot_be_exported(handle: EncoderHandle, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="torch int8 layers, which ONNX cannot express; export the fp32"):
        export_onnx(quantize_int8(handle), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
