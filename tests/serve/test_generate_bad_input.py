"""Bad generation requests get a 4xx JSON error that names the field or limit; LMs and classifiers
refuse each other's endpoints by name."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from fanbu.serve.errors import ApiError
from fanbu.serve.lm_state import Job
from tests.serve.helpers import register_tiny_lm

LONG = " ".join(["the game"] * 40)  # 80 words: over the tiny Llama's 64-token context


def refused(client: TestClient, path: str, body: dict, status: int = 422) -> str:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    return str(error["message"]) if isinstance(error, dict) else str(response.json()["message"])


def test_prompt_over_the_context_length(lm_client: TestClient) -> None:
    message = refused(lm_client, "/v1/generate", {"model": "lm-small", "prompt": LONG})
    assert "context length is 64 tokens" in message
    body = lm_client.post("/v1/completions", json={"model": "lm-small", "prompt": LONG}).json()
    assert body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "context_length"
    fits_alone = {"model": "lm-small", "prompt": "the game", "max_tokens": 63}
    assert "plus max_tokens 63" in refused(lm_client, "/v1/generate", fits_alone)


def test_unknown_chat_role_names_the_allowed_ones(lm_client: TestClient) -> None:
    body = {"model": "lm-small", "messages": [{"role": "wizard", "content": "hi"}]}
    message = refused(lm_client, "/v1/chat/completions", body)
    assert "messages.0.role" in message and "'system', 'user' or 'assistant'" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("n", 2),
    ],
)
def test_parameters_out_of_range_name_the_field(lm_client: TestClient, field: str, value: float) -> None:
    body = {"model": "lm-small", "prompt": "hi", field: value}
    assert field in refused(lm_client, "/v1/completions", body)
    if field != "n":
        assert field in refused(
            lm_client, "/v1/generate", {"model": "lm-small", "prompt": "hi", field: value}
        )


def test_max_tokens_over_the_cap_and_stop_limits(make_client, lms: list[str]) -> None:
    client = make_client(models=lms, generation={"max_tokens": 16, "default_max_tokens": 8, "max_stop": 2})
    message = refused(client, "/v1/generate", {"model": "lm-small", "prompt": "hi", "max_tokens": 17})
    assert "max_tokens is 17" in message and "generation.max_tokens" in message
    chat = {"model": "lm-small", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 40}
    assert "generation.max_tokens" in refused(client, "/v1/chat/completions", chat)
    stops = {"model": "lm-small", "prompt": "hi", "stop": ["a", "b", "c"]}
    assert "generation.max_stop" in refused(client, "/v1/generate", stops)
    assert "non-empty" in refused(client, "/v1/generate", {"model": "lm-small", "prompt": "hi", "stop": ""})
    assert "prompt" in refused(client, "/v1/generate", {"model": "lm-small", "prompt": ""})
    assert "frequency_penalty" in refused(
        client, "/v1/completions", {"model": "lm-small", "prompt": "hi", "frequency_penalty": 1}
    )


def test_generate_on_a_classifier_and_predict_on_an_lm(lm_client: TestClient) -> None:
    message = refused(lm_client, "/v1/generate", {"model": "small", "prompt": "hi"})
    assert "not a causal language model" in message and "/v1/predict" in message
    listed = refused(lm_client, "/v1/predict", {"model": "lm-small", "texts": ["hi"]})
    assert "language model" in listed and "/v1/generate" in listed
    not_listed = refused(lm_client, "/v1/predict", {"model": "lm-large:v0", "texts": ["hi"]})
    assert "causal language model" in not_listed and "/v1/generate" in not_listed
    assert refused(lm_client, "/v1/generate", {"model": "nope", "prompt": "hi"}, status=404)


def test_generate_on_a_classification_cascade(client: TestClient) -> None:
    message = refused(client, "/v1/completions", {"model": "edge", "prompt": "hi"})
    assert "classification cascade" in message and "/v1/predict" in message


def test_chat_needs_a_chat_template(make_client, registry, lms: list[str]) -> None:
    register_tiny_lm(registry, "plain", seed=3, chat=False)
    body = {"model": "plain", "messages": [{"role": "user", "content": "hi"}]}
    assert "no chat template" in refused(make_client(), "/v1/chat/completions", body)


def test_a_full_queue_is_refused_with_429(lm_client: TestClient) -> None:
    service = lm_client.app.state.serve.lm
    route = asyncio.run(service.route("lm-small"))
    job = Job("x", route, "generate", [], [])
    allowed = service.config.generation.workers + service.config.limits.max_queue
    for _ in range(allowed):
        service.admit(job)
    with pytest.raises(ApiError) as refusal:
        service.admit(job)
    assert refusal.value.status == 429 and refusal.value.limit == "max_queue"


def test_generation_needs_the_token(lm_client: TestClient) -> None:
    response = lm_client.post(
        "/v1/completions", json={"model": "lm-small", "prompt": "hi"}, headers={"Authorization": ""}
    )
    assert response.status_code == 401
