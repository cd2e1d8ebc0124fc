"""Fixtures for fanbu.models tests: tiny random handles and a few texts."""

from __future__ import annotations

import pytest

from fanbu.models import CausalLMHandle, EncoderHandle, Provenance

TEXTS = [
    "the patients were happy with the treatment",
    "computer hardware prices fell",
    "a",
    "religion and politics, again!",
]


@pytest.fixture
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture
def encoder() -> EncoderHandle:
    """A tiny random BERT handle with two heads."""
    handle = EncoderHandle.tiny(seed=1)
    handle.add_head("topic", ["sci", "talk", "rec"])
    handle.add_head("sentiment", ["neg", "pos"])
    return handle


@pytest.fixture
def causal_lm() -> CausalLMHandle:
    return CausalLMHandle.tiny(seed=2)


@pytest.fixture
def provenance() -> Provenance:
    return Provenance(
        recipe={"derive": {"method": "finetune", "epochs": 1}},
        parents=["gen0-abc"],
        data_fingerprints={"med": "sha256:1234"},
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        base_model_relation="finetune",
        name="med-small",
        metrics={"med": {"accuracy": 0.75}},
    )
