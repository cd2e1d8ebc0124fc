"""The OpenAI-compatible endpoints, called by the official ``openai`` client over the app's transport."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from tests.serve.helpers import TOKEN

openai = pytest.importorskip("openai")


class AppTransport(httpx.BaseTransport):
    """An httpx transport that hands each request to the app's TestClient (which speaks httpx2)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        answer = self.client.request(
            request.method, str(request.url), headers=headers, content=request.read()
        )
        kept = [(k, v) for k, v in answer.headers.multi_items() if k.lower() != "content-length"]
        return httpx.Response(answer.status_code, headers=kept, content=answer.content, request=request)


@pytest.fixture
def oai(lm_client: TestClient) -> openai.OpenAI:
    """The official client, its requests sent through the app in-process."""
    http = httpx.Client(transport=AppTransport(lm_client))
    return openai.OpenAI(api_key=TOKEN, base_url="http://testserver/v1", http_client=http, max_retries=0)


def test_completions_round_trip(oai: openai.OpenAI, store: LogStore) -> None:
    completion = oai.completions.create(
        model="lm-small", prompt="the doctor said", max_tokens=5, temperature=0
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.model == "lm-small:v0" and len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 5
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    [logged] = store.generations()
    assert f"cmpl-{logged.id}" == completion.id and logged.endpoint == "completions"


def test_chat_round_trip_uses_the_chat_template(oai: openai.OpenAI, store: LogStore) -> None:
    messages = [{"role": "system", "content": "be good"}, {"role": "user", "content": "hello"}]
    chat = oai.chat.completions.create(model="lm-small", messages=messages, max_tokens=4, temperature=0)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.role == "assistant" and isinstance(chat.choices[0].message.content, str)
    [logged] = store.generations()
    assert logged.prompt == "system : be good . user : hello . assistant :" and logged.endpoint == "chat"


def test_streams_concatenate_to_the_whole_answer(oai: openai.OpenAI) -> None:
    args = {"model": "lm-small", "max_tokens": 8, "temperature": 0, "seed": 1}
    whole = oai.completions.create(prompt="computer hardware", **args).choices[0].text
    chunks = list(oai.completions.create(prompt="computer hardware", stream=True, **args))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    messages = [{"role": "user", "content": "computer hardware"}]
    chat_whole = oai.chat.completions.create(messages=messages, **args).choices[0].message.content
    stream = oai.chat.completions.create(
        messages=messages, stream=True, stream_options={"include_usage": True}, **args
    )
    parts = list(stream)
    assert "".join(p.choices[0].delta.content or "" for p in parts) == chat_whole
    assert parts[-1].usage is not None and parts[-1].choices[0].finish_reason in ("stop", "length")


def test_official_client_sees_errors_as_api_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        oai.completions.create(model="lm-small", prompt="x", temperature=-0.5)
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="no-such-model", prompt="x")
