"""Every refusal: status code AND the JSON message that says what was wrong (and which limit)."""

from __future__ import annotations

import dataclasses
import pickle
import threading
import time

import pytest
from fastapi.testclient import TestClient

from fanbu.serve.cascade import Route

LIMITS = {"max_body_bytes": 2048, "max_batch_texts": 4, "max_text_chars": 50}


@pytest.fixture
def strict_client(make_client) -> TestClient:
    return make_client(limits=LIMITS)


def _error(response, status: int, code: str, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


@pytest.mark.parametrize(
    ("headers", "what"),
    [
        ({"Authorization": ""}, "missing"),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, "wrong"),
        ({"Authorization": "Basic dGVzdA=="}, "scheme"),
    ],
)
def test_token_required(client: TestClient, headers: dict[str, str], what: str) -> None:
    for path, method in (
        ("/v1/predict", "post"),
        ("/v1/feedback", "post"),
        ("/metrics", "get"),
        ("/v1/models", "get"),
    ):
        kwargs = {"json": {"model": "small", "texts": ["a"]}} if method == "post" else {}
        response = getattr(client, method)(path, headers=headers, **kwargs)
        _error(response, 401, "unauthorized", "Authorization: Bearer <token>")
        assert response.headers["www-authenticate"] == "Bearer"


def test_auth_can_be_turned_off_on_loopback_only(make_client) -> None:
    open_client = make_client(auth=False)
    assert (
        open_client.post(
            "/v1/predict", json={"model": "small", "texts": ["a"]}, headers={"Authorization": ""}
        ).status_code
        == 200
    )
    from fanbu.config import validate
    from fanbu.errors import ConfigError
    from fanbu.serve import ServeConfig

    with pytest.raises(ConfigError, match="auth is off but host '0.0.0.0' is not a loopback"):
        validate(ServeConfig, {"auth": False, "host": "0.0.0.0"})
    assert ServeConfig().host == "127.0.0.1" and ServeConfig().auth


def test_body_too_large_413(strict_client: TestClient) -> None:
    body = _error(
        strict_client.post("/v1/predict", json={"model": "small", "texts": ["x" * 3000]}),
        413,
        "body_too_large",
        "limit is 2048 bytes",
        "limits.max_body_bytes",
    )
    assert body["limit"] == "max_body_bytes"


def test_streamed_body_too_large_413(strict_client: TestClient) -> None:
    def chunks():
        for _ in range(10):
            yield b'{"model": "small", "texts": ["' + b"x" * 400

    response = strict_client.post(
        "/v1/predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _error(response, 413, "body_too_large", "limits.max_body_bytes")


def test_too_many_texts_422(strict_client: TestClient) -> None:
    body = _error(
        strict_client.post("/v1/predict", json={"model": "small", "texts": ["a"] * 5}),
        422,
        "too_many_texts",
        "5 texts",
        "limit is 4",
        "limits.max_batch_texts",
    )
    assert body["limit"] == "max_batch_texts"


def test_text_too_long_422(strict_client: TestClient) -> None:
    body = _error(
        strict_client.post("/v1/predict", json={"model": "small", "texts": ["ok", "y" * 51]}),
        422,
        "text_too_long",
        "texts.1 has 51 characters",
        "limits.max_text_chars",
    )
    assert body["limit"] == "max_text_chars"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"model": "small", "texts": []}, "texts: List should have at least 1 item"),
        ({"model": "small", "texts": ["a", 3]}, "texts.1: Input should be a valid string"),
        ({"model": "small", "texts": "just one string"}, "texts: Input should be a valid list"),
        ({"texts": ["a"]}, "model: Field required"),
        ({"model": "small", "texts": ["a"], "pickle": "x"}, "pickle: Extra inputs are not permitted"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)
def test_invalid_predict_body_422(client: TestClient, payload: object, fragment: str) -> None:
    _error(client.post("/v1/predict", json=payload), 422, "invalid_request", fragment)


def test_malformed_json_422(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", content=b'{"model": "small", "texts": [', headers={"Content-Type": "application/json"}
    )
    _error(response, 422, "invalid_request", "body is not valid JSON")


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "application/python-pickle", "text/plain", None]
)
def test_pickle_and_non_json_refused_415(client: TestClient, content_type: str | None) -> None:
    payload = pickle.dumps({"model": "small", "texts": ["a"]})
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/v1/predict", "/v1/feedback"):
        response = client.post(path, content=payload, headers=headers)
        _error(response, 415, "unsupported_media_type", "Content-Type: application/json")


def test_unknown_model_404(client: TestClient) -> None:
    _error(
        client.post("/v1/predict", json={"model": "nope", "texts": ["a"]}),
        404,
        "unknown_model",
        "unknown model 'nope'",
    )
    _error(
        client.post("/v1/predict", json={"model": "small:v9", "texts": ["a"]}),
        404,
        "unknown_model",
        "small:v9",
        "not registered",
    )


def test_only_listed_hides_other_models_404(make_client) -> None:
    listed = make_client(models=["small"], only_listed=True)
    assert listed.post("/v1/predict", json={"model": "small", "texts": ["a"]}).status_code == 200
    _error(
        listed.post("/v1/predict", json={"model": "large", "texts": ["a"]}),
        404,
        "unknown_model",
        "not served here",
        "small",
    )


def test_unknown_or_missing_head_422(client: TestClient) -> None:
    _error(
        client.post("/v1/predict", json={"model": "small", "texts": ["a"], "head": "mood"}),
        422,
        "unknown_head",
        "no head 'mood'",
        "topic",
    )
    _error(
        client.post("/v1/predict", json={"model": "multi", "texts": ["a"]}),
        422,
        "head_required",
        "['mood', 'topic']",
    )


def test_non_encoder_model_422(client: TestClient, registry) -> None:
    registry.register_model(name="lm", path="/nowhere", kind="causal_lm")
    _error(
        client.post("/v1/predict", json={"model": "lm", "texts": ["a"]}),
        422,
        "model_not_servable",
        "is a causal language model: it does not classify",
        "/v1/generate",
    )


def test_feedback_errors(client: TestClient) -> None:
    pred_id = client.post("/v1/predict", json={"model": "small", "texts": ["a"]}).json()["predictions"][0][
        "id"
    ]
    _error(
        client.post("/v1/feedback", json={"prediction_id": "f" * 32, "label": "sci"}),
        404,
        "unknown_prediction",
        "unknown prediction id",
    )
    _error(
        client.post("/v1/feedback", json={"prediction_id": pred_id, "label": "cooking"}),
        422,
        "unknown_label",
        "'cooking'",
        "sci, talk, rec",
    )
    _error(
        client.post("/v1/feedback", json={"prediction_id": pred_id}),
        422,
        "invalid_request",
        "give a corrected label or completion, a rating (1-5), or both",
    )
    _error(
        client.post("/v1/feedback", json={"prediction_id": pred_id, "rating": 9}),
        422,
        "invalid_request",
        "rating: Input should be less than or equal to 5",
    )


def test_unknown_path_and_method(client: TestClient) -> None:
    _error(client.get("/v1/nothing"), 404, "not_found", "/v1/nothing")
    _error(client.get("/v1/predict"), 405, "method_not_allowed", "GET /v1/predict")


class _Blocking:
    """Wraps a predictor so that every call waits until released."""

    def __init__(self, inner) -> None:
        self.inner, self.labels = inner, inner.labels
        self.release, self.calls = threading.Event(), 0

    def predict_proba(self, texts, head, batch_size=32):
        self.calls += 1
        assert self.release.wait(timeout=30)
        return self.inner.predict_proba(texts, head, batch_size)


def test_overload_429_with_retry_after(make_client) -> None:
    client = make_client(
        models=["small"],
        limits={"max_queue": 1, "retry_after_s": 3},
        batching={"max_batch": 1, "max_wait_ms": 0},
    )
    state = client.app.state.serve
    route = state.routes["small"]
    blocking = _Blocking(route.small.predictor)
    state.routes["small"] = Route("small", dataclasses.replace(route.small, predictor=blocking))
    results: list[int] = []

    def post() -> None:
        results.append(client.post("/v1/predict", json={"model": "small", "texts": ["a"]}).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    threads[0].start()
    _wait(lambda: blocking.calls == 1)  # the first request is being computed
    threads[1].start()
    _wait(lambda: state.batchers[("small", "topic")].depth() == 1)  # the second waits in the queue
    refused = client.post("/v1/predict", json={"model": "small", "texts": ["b"]})
    body = _error(refused, 429, "overloaded", "1 requests waiting", "retry after 3 s")
    assert body["limit"] == "max_queue" and refused.headers["retry-after"] == "3"
    blocking.release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200, 200]
    assert 'fanbu_rejected_total{reason="overloaded"} 1.0' in client.get("/metrics").text


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_unloggable_prediction_is_not_answered_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fanbu.collect.store import LogStoreError

    def fail(predictions) -> None:
        raise LogStoreError("database is locked")

    monkeypatch.setattr(client.app.state.serve.store, "log_batch", fail)
    response = client.post("/v1/predict", json={"model": "small", "texts": ["a"]})
    _error(response, 503, "store_unavailable", "could not be logged", "database is locked")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("model", ["small", "edge"])
def test_lone_surrogate_fails_alone_and_its_neighbours_are_answered(client: TestClient, model: str) -> None:
    """The reported bug: six bad requests sent with six good ones made five good ones answer 500."""
    from concurrent.futures import ThreadPoolExecutor

    bad = b'{"model": "' + model.encode() + rb'", "texts": ["a\ud800b"]}'  # valid JSON, not valid Unicode
    good = {"model": model, "texts": ["a fine text", "another one"]}

    def send(i: int):
        if i % 2:
            return client.post("/v1/predict", content=bad, headers={"Content-Type": "application/json"})
        return client.post("/v1/predict", json=good)

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(12)))
    for response in responses[0::2]:
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
    for response in responses[1::2]:
        _error(response, 422, "invalid_text", "texts.0: not valid Unicode (lone surrogate U+D800 at 1)")


def test_nul_character_is_refused_with_its_position(client: TestClient) -> None:
    _error(
        client.post("/v1/predict", json={"model": "small", "texts": ["ok", "x\x00y"]}),
        422,
        "invalid_text",
        "texts.1: contains NUL (U+0000) at 1",
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"model": "sm\xe9ll", "texts": ["a"]}', "not UTF-8 text: byte 0xe9 at 13"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"model": "small", "texts": ["a"], "head": ' + b"9" * 5000 + b"}", "body is not valid JSON ("),
    ],
)
def test_unreadable_json_422_like_malformed_json(client: TestClient, raw: bytes, fragment: str) -> None:
    """Bodies FastAPI cannot read (it would answer 400) get the 422 a syntax error gets."""
    for path in ("/v1/predict", "/v1/feedback", "/v1/models/reload"):
        response = client.post(path, content=raw, headers={"Content-Type": "application/json"})
        _error(response, 422, "invalid_request", "body is not valid JSON", fragment)


def test_post_without_body_or_content_type(client: TestClient) -> None:
    """No body and no content type: an optional body is absent, a required one is missing (not 415)."""
    assert client.post("/v1/models/reload").status_code == 200
    _error(client.post("/v1/predict"), 422, "invalid_request", "body: Field required")
    _error(client.post("/v1/predict", content=b"{}"), 415, "unsupported_media_type", "'none'")


def test_nul_in_a_name_is_refused_422(client: TestClient) -> None:
    """A NUL never reaches a store lookup (PostgreSQL refuses it in a parameter: that was a 500)."""
    answer = client.post("/v1/predict", json={"model": "small", "texts": ["a"]}).json()
    prediction_id = answer["predictions"][0]["id"]
    for path, body, field in [
        ("/v1/predict", {"model": "small\x00", "texts": ["a"]}, "model"),
        ("/v1/predict", {"model": "small", "texts": ["a"], "head": "topic\x00"}, "head"),
        ("/v1/feedback", {"prediction_id": "a\x00", "rating": 3}, "prediction_id"),
        ("/v1/feedback", {"prediction_id": prediction_id, "label": "sci\x00"}, "label"),
        ("/v1/models/reload", {"model": "small\x00"}, "model"),
    ]:
        _error(client.post(path, json=body), 422, "invalid_request", f"{field}: Value error, contains NUL")


def test_every_answer_is_documented(client: TestClient) -> None:
    """401 (and 500) on every route behind the token; Retry-After and WWW-Authenticate documented."""
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [("/metrics", "get"), ("/v1/models", "get"), ("/v1/predict", "post")]:
        responses = paths[path][method]["responses"]
        assert {"200", "401", "500"} <= set(responses), (path, responses)
        assert "WWW-Authenticate" in responses["401"]["headers"]
    assert "Retry-After" in paths["/v1/predict"]["post"]["responses"]["429"]["headers"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
