"""Reloading a served model: a new version swaps in without a restart, and no request is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from fanbu.registry import ModelRecord, Registry
from fanbu.serve.loadtest import drive, start_server
from fanbu.serve.state import ServerState
from tests.serve.helpers import LABELS, TEXTS, TOKEN, register_tiny

TIMEOUT_S = 60.0


def predict(client: TestClient, model: str = "small", text: str = TEXTS[0]) -> dict[str, Any]:
    response = client.post("/v1/predict", json={"model": model, "texts": [text]})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def register_corrupt(registry: Registry, name: str) -> ModelRecord:
    """Register a new version of ``name`` whose weights file is garbage."""
    record = register_tiny(registry, name, seed=9)
    (Path(record.path) / "model.safetensors").write_bytes(b"not a safetensors file")
    return record


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def test_reload_swaps_models_and_cascades_to_the_new_version(
    make_client: Callable[..., TestClient], registry: Registry, store: LogStore
) -> None:
    client = make_client(
        models=["small"], cascades={"edge": {"small": "small", "large": "large", "threshold": 1.0}}
    )
    before = predict(client)
    edge_before = predict(client, "edge")
    assert before["model"] == "small:v0" and edge_before["model"] == "large:v0"  # threshold 1: escalated
    register_tiny(registry, "small", seed=7)
    assert predict(client)["model"] == "small:v0"  # registering alone changes nothing served

    response = client.post("/v1/models/reload", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "changed": [{"ref": "small", "old": "small:v0", "new": "small:v1"}],
        "unchanged": {"large": "large:v0"},
        "routes": ["edge", "small"],
        "released": ["small:v0"],
    }
    after = predict(client)
    edge_after = predict(client, "edge")
    assert after["model"] == "small:v1" and after["label"] in LABELS
    routes = client.get("/v1/models").json()["routes"]
    assert routes["small"]["model"] == "small:v1"
    assert routes["edge"] == {
        "model": "small:v1",
        "large": "large:v0",
        "threshold": 1.0,
        "heads": {"topic": LABELS},
    }
    assert client.app.state.serve.pool.loaded() == ["large:v0", "small:v1"]  # type: ignore[attr-defined]

    logged = {p.id: p for p in store.predictions()}
    assert logged[before["id"]].final.model_id == "small:v0"
    assert logged[after["id"]].final.model_id == "small:v1"
    assert {a.role: a.model_id for a in logged[edge_before["id"]].answers} == {
        "small": "small:v0",
        "large": "large:v0",
    }
    assert {a.role: a.model_id for a in logged[edge_after["id"]].answers} == {
        "small": "small:v1",
        "large": "large:v0",
    }
    assert 'fanbu_reloads_total{result="changed"} 1.0' in client.get("/metrics").text


def test_reload_with_nothing_new_changes_nothing(make_client: Callable[..., TestClient]) -> None:
    client = make_client(models=["small", "multi:v0"])
    served = client.app.state.serve.routes["small"]  # type: ignore[attr-defined]
    one = client.post("/v1/models/reload", json={"model": "small"})
    assert one.status_code == 200, one.text
    assert one.json() == {"changed": [], "unchanged": {"small": "small:v0"}, "routes": [], "released": []}
    everything = client.post("/v1/models/reload", headers={"Content-Type": "application/json"})
    assert everything.status_code == 200, everything.text
    assert everything.json()["unchanged"] == {"small": "small:v0", "multi:v0": "multi:v0"}
    assert client.app.state.serve.routes["small"] is served  # type: ignore[attr-defined]
    assert predict(client)["model"] == "small:v0"


def test_reload_of_a_model_not_served_is_refused(make_client: Callable[..., TestClient]) -> None:
    client = make_client(models=["small"])
    response = client.post("/v1/models/reload", json={"model": "ghost"})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_model" and "served: small" in response.json()["message"]
    refused = client.post(
        "/v1/models/reload", json={}, headers={"Authorization": "Bearer wrong-token-0123456"}
    )
    assert refused.status_code == 401


def test_a_new_version_that_fails_to_load_leaves_the_old_one_serving(
    make_client: Callable[..., TestClient], registry: Registry
) -> None:
    client = make_client(models=["small"], cascades={"edge": {"small": "small", "large": "large"}})
    predict(client)
    register_tiny(registry, "large", seed=8, hidden=48)  # a good new large: not swapped either
    broken = register_corrupt(registry, "small")
    response = client.post("/v1/models/reload", json={})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "reload_failed"
    message = body["message"]
    assert "'small'" in message and broken.id in message and broken.path in message  # which model
    assert "could not be loaded (" in message  # why
    assert "small:v0 keeps serving" in message and "reload again" in message  # what now, what to do
    assert predict(client)["model"] == "small:v0"
    assert client.get("/v1/models").json()["routes"]["edge"]["large"] == "large:v0"  # all or nothing

    register_tiny(registry, "small", seed=10)  # the fix: a newer, sound version
    fixed = client.post("/v1/models/reload", json={})
    assert fixed.status_code == 200, fixed.text
    assert {(c["old"], c["new"]) for c in fixed.json()["changed"]} == {
        ("small:v0", "small:v2"),
        ("large:v0", "large:v1"),
    }
    assert predict(client)["model"] == "small:v2"


def test_requests_in_flight_finish_on_the_old_model_and_later_ones_get_the_new(
    make_client: Callable[..., TestClient], registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(models=["small"], batching={"max_batch": 1, "max_wait_ms": 0})
    state: ServerState = client.app.state.serve  # type: ignore[attr-defined]
    old = state.routes["small"].small
    entered, gate = threading.Event(), threading.Event()
    real = old.predictor.predict_proba

    def held(texts: list[str], head: str, batch_size: int = 32) -> np.ndarray:
        entered.set()
        gate.wait(TIMEOUT_S)
        return real(texts, head, batch_size)

    monkeypatch.setattr(old.predictor, "predict_proba", held)
    register_tiny(registry, "small", seed=7)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(predict, client, "small", TEXTS[1])  # computing on v0 ...
        assert entered.wait(TIMEOUT_S)
        queued = pool.submit(predict, client, "small", TEXTS[2])  # ... and one queued behind it
        wait_for(lambda: state.batchers[("small", "topic")].depth() == 1, "the second request is queued")
        reload = pool.submit(client.post, "/v1/models/reload", json={"model": "small"})
        wait_for(lambda: state.routes["small"].small.record.id == "small:v1", "the reload has swapped")
        assert predict(client)["model"] == "small:v1"  # arrives after the swap: the new model, at once
        assert not reload.done() and not running.done() and not queued.done()  # v0 drains first
        gate.set()
        assert running.result(TIMEOUT_S)["model"] == "small:v0"
        assert queued.result(TIMEOUT_S)["model"] == "small:v0"
        response = reload.result(TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.json()["released"] == ["small:v0"] and state.pool.loaded() == ["small:v1"]


def test_hot_swap_under_load_loses_no_request(
    make_client: Callable[..., TestClient], registry: Registry, store: LogStore
) -> None:
    client = make_client(models=["small"], batching={"workers": 2, "max_wait_ms": 2})
    register_tiny(registry, "small", seed=7)
    threads, per_thread = 8, 50
    answers: list[list[tuple[int, str, str]]] = [[] for _ in range(threads)]

    def user(i: int) -> None:
        for k in range(per_thread):
            r = client.post("/v1/predict", json={"model": "small", "texts": [TEXTS[(i + k) % len(TEXTS)]]})
            pred = r.json()["predictions"][0] if r.status_code == 200 else {"model": r.text, "id": ""}
            answers[i].append((r.status_code, pred["model"], pred["id"]))

    users = [threading.Thread(target=user, args=(i,)) for i in range(threads)]
    for thread in users:
        thread.start()
    wait_for(lambda: sum(map(len, answers)) >= threads * per_thread // 4, "a quarter is answered")
    reload = client.post("/v1/models/reload", json={"model": "small"})
    done_at_reload = sum(map(len, answers))
    for thread in users:
        thread.join(TIMEOUT_S * 4)

    assert reload.status_code == 200, reload.text
    assert reload.json()["changed"] == [{"ref": "small", "old": "small:v0", "new": "small:v1"}]
    flat = [a for per_user in answers for a in per_user]
    assert len(flat) == threads * per_thread  # none lost
    assert [a for a in flat if a[0] != 200] == []  # none failed
    for per_user in answers:  # each user's requests run one after another: v0 ... v0, then v1 ... v1
        models = [model for _, model, _ in per_user]
        assert models == sorted(models) and set(models) <= {"small:v0", "small:v1"}
    assert {model for _, model, _ in flat} == {"small:v0", "small:v1"}
    assert done_at_reload < len(flat)  # the swap happened with requests still to come
    logged = {p.id: p.final.model_id for p in store.predictions()}
    assert {pid: logged[pid] for _, _, pid in flat} == {pid: model for _, model, pid in flat}


def test_registry_watch_swaps_to_newer_versions_and_skips_broken_ones(
    make_client: Callable[..., TestClient], registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(models=["small"], watch_seconds=0.05)
    assert predict(client)["model"] == "small:v0"
    register_tiny(registry, "small", seed=7)
    wait_for(lambda: predict(client)["model"] == "small:v1", "the watch swaps to small:v1")
    with caplog.at_level(logging.WARNING, logger="fanbu.serve"):
        broken = register_corrupt(registry, "small")
        wait_for(lambda: "could not be loaded" in caplog.text, "the watch logs the broken version")
        time.sleep(0.3)  # several more polls
    assert predict(client)["model"] == "small:v1"
    assert caplog.text.count(f"its new version {broken.id}") == 1  # logged once, not retried
    register_tiny(registry, "small", seed=11)
    wait_for(lambda: predict(client)["model"] == "small:v3", "the watch swaps to small:v3")


def test_hot_swap_on_a_real_server_under_load(registry: Registry, tmp_path: Path) -> None:
    server = start_server(
        registry.home, ["models=[small]", "batching.workers=2"], TOKEN, tmp_path / "server.log"
    )
    rounds: list[dict[str, Any]] = []
    stop = threading.Event()

    def keep_driving() -> None:  # 8 clients, 100 requests a round, until a round ran after the reload
        while not stop.is_set():
            rounds.append(drive(server.url, TOKEN, "small", TEXTS, concurrency=8, requests=100))

    driver = threading.Thread(target=keep_driving)
    try:
        register_tiny(registry, "small", seed=7)
        driver.start()
        wait_for(lambda: len(rounds) >= 1, "a round of load has run")
        reload = httpx.post(
            f"{server.url}/v1/models/reload", headers=server.headers, json={}, timeout=TIMEOUT_S
        )
        after = len(rounds)
        wait_for(lambda: len(rounds) >= after + 2, "a round has run after the reload")
    finally:
        stop.set()
        driver.join(TIMEOUT_S)
        code = server.stop()
    assert code in (0, -15), server.log.read_text()
    assert reload.status_code == 200, reload.text
    assert reload.json()["changed"] == [{"ref": "small", "old": "small:v0", "new": "small:v1"}]
    ids = [pid for result in rounds for pid in result["ids"]]
    assert [r["errors"] for r in rounds if r["errors"]] == [] and {r["ok"] for r in rounds} == {100}
    assert len(set(ids)) == 100 * len(rounds)
    with LogStore(registry.url) as store:
        answered = {p.id: p.final.model_id for p in store.predictions()}
    assert {answered[pid] for pid in ids} == {"small:v0", "small:v1"}
    assert answered[rounds[-1]["ids"][-1]] == "small:v1"
