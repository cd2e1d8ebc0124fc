"""Loaded models are safe to run from several workers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fanbu.registry import Registry
from fanbu.serve.models import ModelPool
from tests.serve.helpers import TEXTS


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
