"""Generation through the API on tiny random Llamas: /v1/generate, streaming, logging, feedback."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore


def sse(response_text: str) -> list[dict | str]:
    """The ``data:`` payloads of a server-sent event stream, JSON-decoded except ``[DONE]``."""
    events: list[dict | str] = []
    for block in response_text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_generate_answers_and_logs(lm_client: TestClient, store: LogStore) -> None:
    body = {"model": "lm-small", "prompt": "the team won the game", "max_tokens": 6, "temperature": 0}
    response = lm_client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["model"] == "lm-small:v0" and not out["escalated"]
    assert out["finish_reason"] in ("stop", "length") and out["mean_logprob"] <= 0.0
    assert 1 <= out["usage"]["completion_tokens"] <= 6
    [logged] = store.generations()
    assert logged.id == out["id"] and logged.final.text == out["text"] and logged.endpoint == "generate"
    assert logged.prompt == "the team won the game" and logged.final.mean_logprob == out["mean_logprob"]
    again = lm_client.post("/v1/generate", json=body).json()
    assert again["text"] == out["text"]  # greedy is deterministic


def test_seeded_sampling_repeats(lm_client: TestClient) -> None:
    body = {"model": "lm-small", "prompt": "hello", "max_tokens": 8, "temperature": 1.5, "top_p": 0.9}
    first = lm_client.post("/v1/generate", json={**body, "seed": 7}).json()["text"]
    assert lm_client.post("/v1/generate", json={**body, "seed": 7}).json()["text"] == first
    others = {lm_client.post("/v1/generate", json={**body, "seed": s}).json()["text"] for s in range(8)}
    assert len(others) > 1  # a random Llama at temperature 1.5 does not write one text for every seed


def test_stream_concatenates_to_the_greedy_completion(lm_client: TestClient) -> None:
    body = {"model": "lm-small", "prompt": "space science", "max_tokens": 10, "temperature": 0, "seed": 3}
    whole = lm_client.post("/v1/generate", json=body).json()
    response = lm_client.post("/v1/generate", json={**body, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.text)
    assert events[-1] == "[DONE]"
    pieces = [e["text"] for e in events[:-2] if isinstance(e, dict)]
    assert "".join(pieces) == whole["text"]
    final = events[-2]
    assert isinstance(final, dict) and final["finish_reason"] == whole["finish_reason"]
    assert final["id"] != whole["id"]  # each request is its own generation, logged under its own id


def test_stop_string_ends_the_completion(lm_client: TestClient) -> None:
    body = {"model": "lm-small", "prompt": "the", "max_tokens": 12, "temperature": 0}
    text = lm_client.post("/v1/generate", json=body).json()["text"]
    assert len(text) >= 3, f"the tiny model wrote too little to test stop strings: {text!r}"
    stop = text[1:3]
    cut = lm_client.post("/v1/generate", json={**body, "stop": [stop]}).json()
    assert cut["text"] == text[: text.index(stop)] and cut["finish_reason"] == "stop"
    streamed = lm_client.post("/v1/generate", json={**body, "stop": stop, "stream": True})
    pieces = [e["text"] for e in sse(streamed.text)[:-2] if isinstance(e, dict)]
    assert "".join(pieces) == cut["text"]


def test_feedback_rating_and_correction(lm_client: TestClient, store: LogStore) -> None:
    gen = lm_client.post("/v1/generate", json={"model": "lm-small", "prompt": "hi", "max_tokens": 3}).json()
    rated = lm_client.post("/v1/feedback", json={"prediction_id": gen["id"], "rating": 2})
    assert rated.status_code == 200, rated.text
    assert rated.json() == {
        "generation_id": gen["id"],
        "rating": 2,
        "completion_stored": False,
        "status": "recorded",
    }
    fixed = lm_client.post(
        "/v1/feedback", json={"prediction_id": f"cmpl-{gen['id']}", "completion": "mail me at a@b.org"}
    )
    assert fixed.status_code == 200 and fixed.json()["completion_stored"]
    assert [(f.rating, f.completion) for f in store.generation_feedback()] == [
        (2, None),
        (None, "mail me at [EMAIL]"),  # privacy mode "mask" applies to corrections too
    ]
    label = lm_client.post("/v1/feedback", json={"prediction_id": gen["id"], "label": "rec"})
    assert label.status_code == 422 and "not a label" in label.json()["message"]


def test_models_lists_language_models(lm_client: TestClient) -> None:
    routes = lm_client.get("/v1/models").json()["lm_routes"]
    assert routes["lm-small"] == {
        "model": "lm-small:v0",
        "large": None,
        "threshold": None,
        "context_length": 64,
        "runtime": "torch",
        "large_runtime": None,
    }
