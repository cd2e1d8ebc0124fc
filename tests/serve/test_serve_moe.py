"""An MoE encoder registered through the workspace serves like any encoder: pool and API."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.models.moe import MoEHandle
from fanbu.models.moe_layers import to_moe
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace
from fanbu.serve.models import ModelPool, read_labels
from tests.serve.helpers import LABELS, TEXTS

MOOD = ["neg", "pos"]


def tiny_moe(seed: int = 3) -> MoEHandle:
    """A tiny BERT whose FFNs are mixtures of two experts (two perturbed copies of its own FFNs)."""
    dense = EncoderHandle.tiny(hidden_size=32, seed=seed)
    dense.add_head("topic", LABELS)
    dense.add_head("mood", MOOD)
    state = {k: v.clone() for k, v in dense.model.encoder.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    other = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in state.items()}
    to_moe(dense.model.encoder, [state, other], top_k=1, seed=seed)
    return MoEHandle(
        dense.model, dense.tokenizer, dense.labels, dense.max_length, experts=["champion", "other"]
    )


@pytest.fixture
def moe(registry: Registry) -> tuple[MoEHandle, ModelRecord]:
    handle = tiny_moe()
    handle.model.eval()
    record = Workspace(registry).save_and_register(
        handle,
        Provenance(recipe={"test": "moe"}, parents=["small:v0", "large:v0"]),
        name="mixture",
        relation="moe",
    )
    return handle, record


def test_an_moe_model_is_registered_as_moe_and_loads_in_the_pool(
    registry: Registry, moe: tuple[MoEHandle, ModelRecord]
) -> None:
    handle, record = moe
    assert (
        record.id == "mixture:v0"
        and record.kind == "moe"
        and list(record.parents) == ["small:v0", "large:v0"]
    )
    assert read_labels(record) == {"topic": LABELS, "mood": MOOD}
    served = ModelPool(registry).get("mixture")
    assert isinstance(served.predictor, MoEHandle) and served.record.id == record.id
    assert served.labels == {"topic": LABELS, "mood": MOOD} and served.max_length == handle.max_length
    assert not served.predictor.model.training  # readied for worker threads
    np.testing.assert_allclose(
        served.predictor.predict_proba(TEXTS, "topic", 4), handle.predict_proba(TEXTS, "topic", 4), atol=1e-5
    )


def test_the_api_answers_with_the_moe_models_labels(
    make_client: Callable[..., TestClient], moe: tuple[MoEHandle, ModelRecord]
) -> None:
    handle, record = moe
    client = make_client(models=["mixture:v0"])
    listed = client.get("/v1/models").json()["routes"]["mixture:v0"]
    assert listed["model"] == record.id and listed["heads"] == {"topic": LABELS, "mood": MOOD}
    for head, names in (("topic", LABELS), ("mood", MOOD)):
        body = client.post("/v1/predict", json={"model": "mixture", "texts": TEXTS, "head": head}).json()
        assert body["head"] == head and len(body["predictions"]) == len(TEXTS)
        expected = handle.predict_proba(TEXTS, head)
        for pred, probs in zip(body["predictions"], expected, strict=True):
            assert pred["model"] == record.id and not pred["escalated"]
            assert list(pred["probabilities"]) == names
            assert pred["label"] == names[int(np.argmax(probs))]
            assert list(pred["probabilities"].values()) == pytest.approx(probs.tolist(), abs=1e-5)
