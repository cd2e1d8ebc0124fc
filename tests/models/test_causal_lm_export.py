"""Causal-LM exports: int8 dynamic quantisation and CTranslate2, each with a perplexity parity check."""

from __future__ import annotations

import pytest
import torch

from fanbu.models import CausalLMHandle
from fanbu.models.lm_export import (
    export_ctranslate2,
    lm_parity,
    quantize_lm_int8,
    token_windows,
    torch_greedy,
    torch_scorer,
)

TEXTS = ["the team will play a great game on the first day", "alpha beta gamma delta epsilon zeta"]
PROMPTS = ["the team", "alpha beta"]


@pytest.fixture
def lm() -> CausalLMHandle:
    handle = CausalLMHandle.tiny(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, seed=2)
    handle.model.eval()
    return handle


def test_int8_copy_is_quantised_and_within_tolerance(lm) -> None:
    int8 = quantize_lm_int8(lm)
    assert any(
        "DynamicQuantizedLinear" in type(m).__name__ or "quantized" in type(m).__module__
        for m in int8.model.modules()
    )
    assert all(isinstance(p, torch.Tensor) for p in lm.model.parameters())  # the input is untouched
    parity = lm_parity(lm, torch_scorer(int8), torch_greedy(int8), TEXTS, PROMPTS, tolerance=0.05)
    assert parity.passed, parity.as_dict()


def test_ctranslate2_float32_export_matches_pytorch(lm, tmp_path) -> None:
    pytest.importorskip("ctranslate2")
    exported = export_ctranslate2(lm, tmp_path / "ct2", quantization="float32")
    assert (tmp_path / "ct2" / "model.bin").is_file()
    assert (tmp_path / "ct2" / "tokenizer.json").is_file() or (
        tmp_path / "ct2" / "tokenizer_config.json"
    ).is_file()
    parity = lm_parity(lm, exported.score, exported.greedy, TEXTS, PROMPTS, tolerance=1e-3, new_tokens=8)
    assert parity.passed and parity.greedy_agreement == 1.0, parity.as_dict()


def test_ctranslate2_int8_export_is_within_tolerance(lm, tmp_path) -> None:
    pytest.importorskip("ctranslate2")
    exported = export_ctranslate2(lm, tmp_path / "ct2", quantization="int8")
    parity = lm_parity(lm, exported.score, exported.greedy, TEXTS, PROMPTS, tolerance=0.05, new_tokens=8)
    assert parity.passed, parity.as_dict()
    assert len(exported.greedy(token_windows(lm, ["the team"])[0], 5)) == 5
