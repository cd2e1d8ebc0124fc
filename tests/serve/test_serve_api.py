"""The API through FastAPI's TestClient: predict, feedback, cascade, health, metrics, OpenAPI."""

from __future__ import annotations

import math

from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from tests.serve.helpers import LABELS, TEXTS


def test_predict_answers_and_logs_each_text(client: TestClient, store: LogStore) -> None:
    response = client.post("/v1/predict", json={"model": "small", "texts": TEXTS[:3]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "small" and body["head"] == "topic"
    predictions = body["predictions"]
    assert len(predictions) == 3 and len({p["id"] for p in predictions}) == 3
    for pred in predictions:
        assert pred["model"] == "small:v0" and pred["label"] in LABELS and not pred["escalated"]
        assert set(pred["probabilities"]) == set(LABELS)
        assert math.isclose(sum(pred["probabilities"].values()), 1.0, rel_tol=1e-5)
        assert pred["confidence"] == max(pred["probabilities"].values())
    logged = {p.id: p for p in store.predictions()}
    assert set(logged) == {p["id"] for p in predictions}
    first = logged[predictions[0]["id"]]
    assert first.final.label == predictions[0]["label"] and first.head == "topic"
    assert first.text == TEXTS[0]  # privacy "mask": nothing to mask here


def test_versioned_ref_and_head_selection(client: TestClient) -> None:
    ok = client.post("/v1/predict", json={"model": "multi:v0", "texts": ["good"], "head": "mood"})
    assert ok.status_code == 200, ok.text
    assert set(ok.json()["predictions"][0]["probabilities"]) == {"neg", "pos"}
    also = client.post("/v1/predict", json={"model": "small:0", "texts": ["good"]})
    assert also.status_code == 200 and also.json()["predictions"][0]["model"] == "small:v0"


def test_feedback_is_recorded(client: TestClient, store: LogStore) -> None:
    pred_id = client.post("/v1/predict", json={"model": "small", "texts": ["a"]}).json()["predictions"][0][
        "id"
    ]
    response = client.post("/v1/feedback", json={"prediction_id": pred_id, "label": "rec", "rating": 2})
    assert response.status_code == 200, response.text
    assert response.json() == {"prediction_id": pred_id, "label": "rec", "rating": 2, "status": "recorded"}
    rating_only = client.post("/v1/feedback", json={"prediction_id": pred_id, "rating": 5})
    assert rating_only.status_code == 200
    assert [(f.label, f.rating) for f in store.feedback()] == [("rec", 2), (None, 5)]


def test_cascade_escalates_below_threshold_and_logs_both(make_client, store: LogStore) -> None:
    client = make_client(cascades={"edge": {"small": "small", "large": "large", "threshold": 0.0}})
    never = client.post("/v1/predict", json={"model": "edge", "texts": TEXTS}).json()["predictions"]
    assert not any(p["escalated"] for p in never) and {p["model"] for p in never} == {"small:v0"}
    client = make_client(cascades={"edge2": {"small": "small", "large": "large", "threshold": 1.0}})
    always = client.post("/v1/predict", json={"model": "edge2", "texts": TEXTS}).json()["predictions"]
    assert all(p["escalated"] for p in always) and {p["model"] for p in always} == {"large:v0"}
    logged = {p.id: p for p in store.predictions()}
    for pred in always:
        roles = {a.role: a.model_id for a in logged[pred["id"]].answers}
        assert roles == {"small": "small:v0", "large": "large:v0"}


def test_cascade_threshold_splits_by_confidence(make_client) -> None:
    probe = make_client().post("/v1/predict", json={"model": "small", "texts": TEXTS}).json()["predictions"]
    confidences = sorted(p["confidence"] for p in probe)
    threshold = (confidences[2] + confidences[3]) / 2
    client = make_client(cascades={"mid": {"small": "small", "large": "large", "threshold": threshold}})
    preds = client.post("/v1/predict", json={"model": "mid", "texts": TEXTS}).json()["predictions"]
    assert sum(p["escalated"] for p in preds) == 3


def test_health_metrics_models_and_openapi(client: TestClient) -> None:
    client.post("/v1/predict", json={"model": "edge", "texts": ["a", "b"]})
    health = client.get("/health", headers={"Authorization": ""})
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'fanbu_predictions_total{model="' in metrics.text
    assert 'fanbu_requests_total{endpoint="/v1/predict",status="200"} 1.0' in metrics.text
    assert "fanbu_batch_texts_bucket" in metrics.text
    routes = client.get("/v1/models").json()["routes"]
    assert routes["edge"] == {
        "model": "small:v0",
        "large": "large:v0",
        "threshold": 0.5,
        "heads": {"topic": LABELS},
    }
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/feedback", "/health", "/metrics"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "413" in schema["paths"]["/v1/predict"]["post"]["responses"]


def test_privacy_hash_and_mask(make_client, store: LogStore) -> None:
    secret = "mail me at jane.doe@example.com or call +1 555-123-4567, account 12345678"
    masked = make_client(privacy="mask").post("/v1/predict", json={"model": "small", "texts": [secret]})
    hashed = make_client(privacy="hash").post("/v1/predict", json={"model": "small", "texts": [secret]})
    logged = {p.id: p for p in store.predictions()}
    kept = logged[masked.json()["predictions"][0]["id"]].text
    assert kept == "mail me at [EMAIL] or call [PHONE], account [NUMBER]"
    only_hash = logged[hashed.json()["predictions"][0]["id"]]
    assert only_hash.text is None and len(only_hash.text_hash) == 64
