"""Micro-batches run in runs of similar length; loaded models are safe to run from several workers."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from fanbu.models import EncoderHandle
from fanbu.registry import Registry
from fanbu.serve.cascade import CHARS_PER_TOKEN, PAD_SLACK, length_runs, predict_in_runs
from fanbu.serve.models import ModelPool, Served
from tests.serve.helpers import TEXTS


def test_length_runs_cover_every_text_once_in_runs_of_similar_length() -> None:
    rng = np.random.default_rng(0)
    texts = ["w " * int(n) for n in rng.integers(1, 400, 60)]
    runs = length_runs(texts, max_length=64, batch_size=8)
    assert sorted(i for run in runs for i in run) == list(range(60))
    cap = 64 * CHARS_PER_TOKEN
    for run in runs:
        sizes = [min(len(texts[i]), cap) for i in run]
        assert len(run) <= 8 and max(sizes) <= PAD_SLACK * min(sizes)
    firsts = [min(len(texts[run[0]]), cap) for run in runs]
    assert firsts == sorted(firsts, reverse=True)  # longest first


def test_texts_past_the_token_budget_share_a_run() -> None:
    long = ["word " * n for n in (60, 90, 200)]  # all longer than 32 * CHARS_PER_TOKEN characters
    assert length_runs([*long, "short"], max_length=32, batch_size=8) == [[0, 1, 2], [3]]
    assert length_runs(["", "a", ""], max_length=32, batch_size=2) == [[0, 1], [2]]  # empty texts too


class _Recording:
    """A predictor that records the batches it is given (and answers like the handle it wraps)."""

    def __init__(self, inner: EncoderHandle) -> None:
        self.inner, self.labels, self.batches = inner, inner.labels, []

    def predict_proba(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        self.batches.append(list(texts))
        return self.inner.predict_proba(texts, head, batch_size)


def test_predict_in_runs_matches_one_batch_in_the_texts_order(registry: Registry) -> None:
    served = ModelPool(registry).get("small")
    recording = _Recording(served.predictor)  # type: ignore[arg-type]
    texts = [t * k for k in (1, 5, 2, 9) for t in TEXTS]
    probs = predict_in_runs(Served(served.record, recording, served.labels, 32), texts, "topic", 4)
    expected = served.predictor.predict_proba(texts, "topic", 64)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert sorted(t for batch in recording.batches for t in batch) == sorted(texts)
    assert len(recording.batches) > len(texts) // 4  # split by length, not only by batch size


def test_pool_sets_both_runtimes_threads_and_readies_models_for_workers(registry: Registry) -> None:
    before = torch.get_num_threads()
    try:
        pool = ModelPool(registry, threads=1)
        assert torch.get_num_threads() == 1  # torch gets the count onnxruntime sessions get
        served = pool.get("small")
    finally:
        torch.set_num_threads(before)
    assert served.max_length == served.predictor.max_length  # type: ignore[attr-defined]
    model = served.predictor.model  # type: ignore[attr-defined]
    assert not model.training  # eval for good: no worker switches it back to training (dropout)
    texts = [t * k for k in (1, 3) for t in TEXTS]
    expected = served.predictor.predict_proba(texts, "topic", 4)
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(served.predictor.predict_proba(texts, "topic", 4)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4 and not model.training
    for probs in results:
        np.testing.assert_allclose(probs, expected, atol=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_api_answers_the_same_with_several_workers(make_client, workers: int) -> None:
    client = make_client(models=["small"], batching={"workers": workers, "max_wait_ms": 20})
    texts = [t * k for k in (1, 4) for t in TEXTS]
    answers: dict[str, list[float]] = {}

    def ask(text: str) -> None:
        body = client.post("/v1/predict", json={"model": "small", "texts": [text]}).json()
        answers[text] = body["predictions"][0]["probabilities"]

    threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    alone = client.post("/v1/predict", json={"model": "small", "texts": texts}).json()["predictions"]
    assert len(answers) == len(texts)
    for text, pred in zip(texts, alone, strict=True):
        assert answers[text] == pytest.approx(pred["probabilities"], abs=1e-5)
