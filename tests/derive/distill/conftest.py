"""Tiny encoders and causal LMs, trained teachers, and toy data for the distillation tests."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from distill_helpers import LABELS, quick, topic_task

from fanbu.models import CausalLMHandle, EncoderHandle
from fanbu.train.classify import train_heads


@pytest.fixture(scope="session")
def task_data() -> dict[str, tuple[list[str], list[int]]]:
    return {"train": topic_task(64, 0), "validation": topic_task(32, 1), "heldout": topic_task(48, 2)}


@pytest.fixture(scope="session")
def trained_teacher(task_data) -> EncoderHandle:
    """A tiny encoder trained on the topic task (the same object for the whole session: copy it)."""
    teacher = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=0)
    torch.manual_seed(0)  # the head's initialisation: the same teacher whatever ran before
    teacher.add_head("topic", LABELS)
    train_heads(teacher, {"topic": task_data["train"]}, quick(epochs=6))
    teacher.model.eval()
    return teacher


@pytest.fixture
def teacher(trained_teacher) -> EncoderHandle:
    return copy.deepcopy(trained_teacher)


@pytest.fixture
def student() -> EncoderHandle:
    """A smaller random encoder (narrower, one layer, two heads) with the teacher's head."""
    handle = EncoderHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=3)
    torch.manual_seed(3)
    handle.add_head("topic", LABELS)
    return handle


@pytest.fixture(scope="session")
def lm_texts() -> dict[str, list[str]]:
    rng = random.Random(5)
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

    def sentence() -> str:
        start = rng.randrange(4)
        return " ".join(words[start : start + 8])

    return {"train": [sentence() for _ in range(48)], "validation": [sentence() for _ in range(12)]}


@pytest.fixture(scope="session")
def trained_lm_teacher(lm_texts) -> CausalLMHandle:
    """A tiny Llama trained on a repetitive toy corpus."""
    from fanbu.train import CausalLMLoss, TaskData, TextPlan, Trainer, causal_lm_forward

    handle = CausalLMHandle.tiny(hidden_size=32, num_layers=2, seed=0)
    plan = TextPlan([TaskData("lm", lm_texts["train"])], handle.tokenize, batch_size=16, seed=0)
    Trainer(handle.model, plan, quick(epochs=8), [CausalLMLoss()], forward=causal_lm_forward).fit()
    handle.model.eval()
    return handle
