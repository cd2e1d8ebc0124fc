"""The cheap probes: parameter counts of candidates and batch-1 latency of real handles."""

from __future__ import annotations

import pytest
from torch import nn

from fanbu.derive.search import SearchError, batch1_latency, candidate_params
from fanbu.evaluate import param_count
from fanbu.models import CausalLMHandle, EncoderHandle

TEXTS = ["the cat sat on the mat", "a dog barked"]


def test_candidate_params_of_modules_and_handles() -> None:
    assert candidate_params(nn.Linear(3, 2)) == 8
    handle = CausalLMHandle.tiny()
    assert candidate_params(handle) == param_count(handle.model)
    with pytest.raises(
        SearchError, match="cannot count the parameters of a str: make build return an nn.Module"
    ):
        candidate_params("not a model")


def test_batch1_latency_times_encoders_and_causal_lms() -> None:
    encoder = EncoderHandle.tiny()
    encoder.add_head("topic", ["a", "b"])
    measure = batch1_latency(TEXTS, warmup=1, iterations=2)
    assert measure(encoder) > 0.0  # through the first head's predict_proba
    assert batch1_latency(TEXTS, head="topic", warmup=0, iterations=1)(encoder) > 0.0
    assert measure(CausalLMHandle.tiny()) > 0.0  # a plain forward pass


def test_batch1_latency_errors_say_what_to_do() -> None:
    with pytest.raises(SearchError, match="batch1_latency needs at least one example text"):
        batch1_latency([])
    with pytest.raises(
        SearchError, match="cannot time a Linear: batch1_latency needs a handle with .tokenize"
    ):
        batch1_latency(TEXTS)(nn.Linear(2, 2))
