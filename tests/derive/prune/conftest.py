"""Tiny handles and calibration data for the pruning tests."""

from __future__ import annotations

import pytest
from prune_helpers import LABELS, TEXTS

from fanbu.derive.prune import Calibration
from fanbu.models import CausalLMHandle, EncoderHandle


@pytest.fixture
def encoder() -> EncoderHandle:
    """A tiny BERT: hidden 32, 2 layers, 4 heads of 8, FFN 64, one 3-class head, in eval mode."""
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=3)
    handle.add_head("topic", ["a", "b", "c"])
    handle.model.eval()
    return handle


@pytest.fixture
def causal_lm() -> CausalLMHandle:
    """A tiny tied Llama: hidden 32, 2 layers, 4 query heads in 2 KV groups of head_dim 8, FFN 64."""
    handle = CausalLMHandle.tiny(seed=4)
    handle.model.eval()
    return handle


@pytest.fixture
def calibration() -> Calibration:
    return Calibration(texts=list(TEXTS), labels=list(LABELS), head="topic", batch_size=4)
