"""The packaged MiniLM-L6 exports to ONNX, matches PyTorch, and quantises to a smaller int8 graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fanbu.derive.quantize import check_onnx, export_onnx, quantize_onnx_int8
from fanbu.models import EncoderHandle
from fanbu.models.onnx import OnnxClassifier

TEXTS = [
    "The spacecraft entered orbit around Jupiter after a five-year cruise.",
    "My hard drive makes a clicking noise when the computer boots.",
    "Is there any evidence for the historical existence of the prophet?",
    "The goalie stopped forty shots and the team won in overtime.",
    "short",
    "Gun control legislation was debated again in the senate this week, with no vote scheduled.",
]


@pytest.mark.integration
def test_minilm_export_parity_and_int8(tmp_path: Path) -> None:
    handle = EncoderHandle.from_source("package:all-MiniLM-L6-v2", max_length=128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        handle.add_head("topic", ["space", "hardware", "religion", "hockey", "guns"])
    path = export_onnx(handle, tmp_path / "model.onnx")
    assert check_onnx(handle, path, TEXTS, atol=1e-4) <= 1e-4
    int8 = quantize_onnx_int8(path, tmp_path / "model.int8.onnx")
    assert int8.stat().st_size < 0.3 * path.stat().st_size  # weights and embeddings in int8
    got = OnnxClassifier.from_handle(handle, int8, intra_op_threads=2).predict_proba(TEXTS, "topic")
    assert np.abs(got - handle.predict_proba(TEXTS, "topic")).max() < 0.05
