"""Tiny encoders and causal LMs and toy data for the fine-tuning tests."""

from __future__ import annotations

import pytest
import torch
from finetune_helpers import LABELS, sentiment_task

from fanbu.models import CausalLMHandle, EncoderHandle


@pytest.fixture(scope="session")
def task_data() -> dict[str, tuple[list[str], list[int]]]:
    return {
        "train": sentiment_task(64, 0),
        "validation": sentiment_task(32, 1),
        "heldout": sentiment_task(48, 2),
    }


@pytest.fixture
def encoder() -> EncoderHandle:
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=0)
    torch.manual_seed(0)  # the head's initialisation
    handle.add_head("sentiment", LABELS)
    return handle


@pytest.fixture
def causal_lm() -> CausalLMHandle:
    return CausalLMHandle.tiny(hidden_size=32, num_layers=2, seed=0)


@pytest.fixture(scope="session")
def lm_texts() -> dict[str, list[str]]:
    words = [
        "the",
        "team",
        "will",
        "play",
        "a",
        "great",
        "game",
        "on",
        "the",
        "first",
        "day",
        "of",
        "the",
        "year",
    ]
    sentences = [" ".join(words[start : start + 8]) for start in range(5)]
    return {"train": sentences * 8, "validation": sentences[:3]}
