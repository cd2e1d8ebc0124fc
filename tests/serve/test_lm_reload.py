"""Reloading a served causal LM: a new version swaps in without a restart; no generation or stream is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from fanbu.registry import ModelRecord, Registry
from fanbu.serve.lm_engine import Sampling
from fanbu.serve.lm_models import ServedLM, load_lm
from fanbu.serve.state import ServerState
from tests.serve.helpers import TEXTS, register_tiny_lm
from tests.serve.test_generate import sse
from tests.serve.test_reload import TIMEOUT_S, wait_for

MAX_TOKENS = 6


def generate(client: TestClient, model: str, prompt: str, stream: bool = False) -> dict[str, Any]:
    """A greedy generation's final answer; a stream is checked whole and its pieces joined into ``text``."""
    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    if not stream:
        return response.json()
    events = sse(response.text)
    assert events[-1] == "[DONE]", response.text  # the stream was not cut
    final = events[-2]
    assert isinstance(final, dict) and "error" not in final, response.text
    return {**final, "text": "".join(e["text"] for e in events[:-2] if isinstance(e, dict))}


def greedy(record: ModelRecord, prompt: str) -> str:
    """What ``record``'s LM writes for ``prompt`` on its own, outside the server."""
    served = load_lm(record)
    return served.run(served.prompt(prompt), Sampling(MAX_TOKENS, temperature=0.0)).text


def register_corrupt_lm(registry: Registry, name: str) -> ModelRecord:
    """Register a new version of ``name`` whose weights file is garbage."""
    record = register_tiny_lm(registry, name, seed=9)
    [weights] = Path(record.path).glob("*.safetensors")
    weights.write_bytes(b"not a safetensors file")
    return record


def test_reload_swaps_lms_and_lm_cascades_to_the_new_version(
    make_client: Callable[..., TestClient], lms: list[str], registry: Registry, store: LogStore
) -> None:
    client = make_client(
        models=["small", "lm-small"],
        lm_cascades={"chain": {"small": "lm-small", "large": "lm-large", "threshold": -1e9}},
    )
    before = generate(client, "lm-small", TEXTS[0])
    assert before["model"] == "lm-small:v0"
    v1 = register_tiny_lm(registry, "lm-small", seed=5)
    assert generate(client, "lm-small", TEXTS[0])["model"] == "lm-small:v0"  # registering changes nothing

    response = client.post("/v1/models/reload", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "changed": [{"ref": "lm-small", "old": "lm-small:v0", "new": "lm-small:v1"}],
        "unchanged": {"small": "small:v0", "lm-large": "lm-large:v0"},
        "routes": ["chain", "lm-small"],
        "released": ["lm-small:v0"],
    }
    after = generate(client, "lm-small", TEXTS[0])
    assert after["model"] == "lm-small:v1" and after["text"] == greedy(v1, TEXTS[0])
    streamed = generate(client, "lm-small", TEXTS[0], stream=True)
    assert streamed["model"] == "lm-small:v1" and streamed["text"] == after["text"]
    chain = generate(client, "chain", TEXTS[1])  # threshold -1e9: the small LM answers
    assert chain["model"] == "lm-small:v1" and chain["text"] == greedy(v1, TEXTS[1])
    routes = client.get("/v1/models").json()["lm_routes"]
    assert routes["lm-small"]["model"] == "lm-small:v1"
    assert (routes["chain"]["model"], routes["chain"]["large"]) == ("lm-small:v1", "lm-large:v0")
    state: ServerState = client.app.state.serve  # type: ignore[attr-defined]
    assert state.lm.pool.loaded() == ["lm-large:v0", "lm-small:v1"]
    logged = {g.id: g.final.model_id for g in store.generations()}
    assert logged[before["id"]] == "lm-small:v0" and logged[after["id"]] == "lm-small:v1"
    assert 'fanbu_reloads_total{result="changed"} 1.0' in client.get("/metrics").text

    register_tiny_lm(registry, "lm-large", seed=6, hidden=48)
    one = client.post("/v1/models/reload", json={"model": "chain"})  # a cascade: its two refs only
    assert one.status_code == 200, one.text
    assert one.json()["changed"] == [{"ref": "lm-large", "old": "lm-large:v0", "new": "lm-large:v1"}]
    assert one.json()["unchanged"] == {"lm-small": "lm-small:v1"} and one.json()["routes"] == ["chain"]
    ghost = client.post("/v1/models/reload", json={"model": "ghost"})
    assert ghost.status_code == 404 and "chain, lm-large, lm-small, small" in ghost.json()["message"]


def test_generations_in_flight_finish_on_the_old_lm_and_later_ones_get_the_new(
    make_client: Callable[..., TestClient],
    lms: list[str],
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(models=["lm-small"])
    state: ServerState = client.app.state.serve  # type: ignore[attr-defined]
    old = state.lm.routes["lm-small"].small
    v0_text = generate(client, "lm-small", TEXTS[2])["text"]
    entered, gate = threading.Event(), threading.Event()
    real = old.handle.model.forward

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        gate.wait(TIMEOUT_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(old.handle.model, "forward", held)
    v1 = register_tiny_lm(registry, "lm-small", seed=5)
    with ThreadPoolExecutor(3) as pool:
        try:
            streaming = pool.submit(generate, client, "lm-small", TEXTS[2], True)  # generating on v0 ...
            assert entered.wait(TIMEOUT_S)
            reload = pool.submit(client.post, "/v1/models/reload", json={"model": "lm-small"})
            wait_for(lambda: state.lm.routes["lm-small"].small.record.id == "lm-small:v1", "the swap")
            later = generate(client, "lm-small", TEXTS[2])  # arrives after the swap: the new LM, at once
            assert later["model"] == "lm-small:v1" and later["text"] == greedy(v1, TEXTS[2])
            assert not reload.done() and not streaming.done()  # the reload waits for the v0 stream
        finally:
            gate.set()
        finished = streaming.result(TIMEOUT_S)
        response = reload.result(TIMEOUT_S)
    assert finished["model"] == "lm-small:v0" and finished["text"] == v0_text  # the whole stream, on v0
    assert response.status_code == 200, response.text
    assert response.json()["released"] == ["lm-small:v0"] and state.lm.pool.loaded() == ["lm-small:v1"]


def test_a_request_prepared_across_the_swap_runs_on_the_new_lm(
    make_client: Callable[..., TestClient],
    lms: list[str],
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(models=["lm-small"])
    state: ServerState = client.app.state.serve  # type: ignore[attr-defined]
    old = state.lm.routes["lm-small"].small
    entered, gate = threading.Event(), threading.Event()
    real = ServedLM.prompt

    def held(self: ServedLM, *args: Any, **kwargs: Any) -> Any:
        if self is old:  # the request picked the v0 route and is tokenizing its prompt for v0
            entered.set()
            gate.wait(TIMEOUT_S)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ServedLM, "prompt", held)
    v1 = register_tiny_lm(registry, "lm-small", seed=5)
    with ThreadPoolExecutor(1) as pool:
        try:
            pending = pool.submit(generate, client, "lm-small", TEXTS[3], True)
            assert entered.wait(TIMEOUT_S)
            response = client.post("/v1/models/reload", json={})  # nothing admitted on v0: no wait
            assert response.status_code == 200 and response.json()["released"] == ["lm-small:v0"]
        finally:
            gate.set()
        out = pending.result(TIMEOUT_S)
    assert out["model"] == "lm-small:v1" and out["text"] == greedy(v1, TEXTS[3])  # never on a released LM


def test_lm_hot_swap_under_load_loses_no_request_or_stream(
    make_client: Callable[..., TestClient], lms: list[str], registry: Registry, store: LogStore
) -> None:
    client = make_client(models=["lm-small"])
    v0 = registry.get_model("lm-small:v0")
    v1 = register_tiny_lm(registry, "lm-small", seed=5)
    expected = {(r.id, t): greedy(r, t) for r in (v0, v1) for t in TEXTS}
    users, per_user = 6, 12
    answers: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(users)]

    def user(i: int) -> None:
        for k in range(per_user):
            prompt = TEXTS[(i + k) % len(TEXTS)]
            answers[i].append((prompt, generate(client, "lm-small", prompt, stream=(i + k) % 2 == 0)))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(map(len, answers)) >= users * per_user // 4, "a quarter is answered")
    reload = client.post("/v1/models/reload", json={})
    done_at_reload = sum(map(len, answers))
    for thread in threads:
        thread.join(TIMEOUT_S * 4)

    assert reload.status_code == 200, reload.text
    assert reload.json()["changed"] == [{"ref": "lm-small", "old": "lm-small:v0", "new": "lm-small:v1"}]
    flat = [a for per in answers for a in per]
    assert len(flat) == users * per_user  # none lost (each one answered 200, each stream ended in [DONE])
    for prompt, out in flat:  # every text whole, written by the version that says it answered
        assert out["text"] == expected[(out["model"], prompt)]
    for per in answers:  # each user's requests run one after another: v0 ... v0, then v1 ... v1
        models = [out["model"] for _, out in per]
        assert models == sorted(models)
    assert {out["model"] for _, out in flat} == {"lm-small:v0", "lm-small:v1"}
    assert done_at_reload < len(flat)  # the swap happened with requests still to come
    logged = {g.id: g.final.model_id for g in store.generations()}
    assert {out["id"]: logged[out["id"]] for _, out in flat} == {out["id"]: out["model"] for _, out in flat}


def test_a_new_lm_version_that_fails_to_load_leaves_the_old_one_serving(
    make_client: Callable[..., TestClient], lms: list[str], registry: Registry
) -> None:
    client = make_client(models=["lm-small"])
    broken = register_corrupt_lm(registry, "lm-small")
    response = client.post("/v1/models/reload", json={})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "reload_failed"
    assert broken.id in body["message"] and "could not be loaded (" in body["message"]
    assert "lm-small:v0 keeps serving" in body["message"] and "reload again" in body["message"]
    assert generate(client, "lm-small", TEXTS[0])["model"] == "lm-small:v0"
    assert 'fanbu_reloads_total{result="failed"} 1.0' in client.get("/metrics").text

    register_tiny_lm(registry, "lm-small", seed=10)  # the fix: a newer, sound version
    fixed = client.post("/v1/models/reload", json={})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["changed"] == [{"ref": "lm-small", "old": "lm-small:v0", "new": "lm-small:v2"}]
    assert generate(client, "lm-small", TEXTS[0])["model"] == "lm-small:v2"


def test_registry_watch_swaps_lms_and_skips_broken_ones(
    make_client: Callable[..., TestClient],
    lms: list[str],
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(models=["lm-small"], watch_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger="fanbu.serve"):
        broken = register_corrupt_lm(registry, "lm-small")
        wait_for(lambda: "could not be loaded" in caplog.text, "the watch logs the broken version")
        time.sleep(0.3)  # several more polls
    assert generate(client, "lm-small", TEXTS[0])["model"] == "lm-small:v0"
    assert caplog.text.count(f"its new version {broken.id}") == 1  # logged once, not retried
    register_tiny_lm(registry, "lm-small", seed=11)
    wait_for(lambda: generate(client, "lm-small", TEXTS[0])["model"] == "lm-small:v2", "the watch swaps")
