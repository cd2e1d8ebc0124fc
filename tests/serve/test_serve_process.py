"""One real uvicorn process on a free loopback port, and the token shown once at first start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from fanbu.collect.store import LogStore
from fanbu.config import validate
from fanbu.registry import Registry
from fanbu.serve import ServeConfig, resolve_token
from fanbu.serve.loadtest import drive, start_server
from fanbu.serve.security import TOKEN_ENV, TOKEN_FILE, check_bearer
from tests.serve.helpers import TEXTS, TOKEN


def test_real_server_process(registry: Registry, tmp_path: Path) -> None:
    server = start_server(registry.home, ["models=[small]", "privacy=text"], TOKEN, tmp_path / "server.log")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        client = httpx.Client(timeout=120)
        assert (
            client.post(f"{server.url}/v1/predict", json={"model": "small", "texts": ["a"]}).status_code
            == 401
        )
        response = client.post(
            f"{server.url}/v1/predict", headers=server.headers, json={"model": "small", "texts": TEXTS[:2]}
        )
        assert response.status_code == 200, response.text
        ids = [p["id"] for p in response.json()["predictions"]]
        feedback = client.post(
            f"{server.url}/v1/feedback",
            headers=server.headers,
            json={"prediction_id": ids[0], "label": "rec"},
        )
        assert feedback.status_code == 200, feedback.text
        metrics = client.get(f"{server.url}/metrics", headers=server.headers)
        assert "fanbu_feedback_total 1.0" in metrics.text
        assert client.get(f"{server.url}/openapi.json").json()["info"]["title"] == "fanbu serve"
        acks = tmp_path / "acks.txt"
        load = drive(server.url, TOKEN, "small", TEXTS, concurrency=3, requests=7, ack_file=str(acks))
        assert load["ok"] == 7 and load["errors"] == {} and 0 < load["p50_ms"] <= load["p95_ms"]
        assert sorted(acks.read_text().split()) == sorted(load["ids"]) and len(set(load["ids"])) == 7
        ids += load["ids"]
        refused = drive(server.url, "wrong-token-0123456789", "small", TEXTS, concurrency=2, requests=3)
        assert refused["ok"] == 0 and refused["errors"] == {"401": 3}
    finally:
        code = server.stop()
    assert code in (0, -15), server.log.read_text()  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Traceback" not in server.log.read_text()
    with LogStore(registry.url) as store:
        assert store.existing_ids(ids) == set(ids)
        assert sorted(p.text for p in store.predictions() if p.id in ids[:2]) == sorted(TEXTS[:2])


def test_token_generated_once_and_only_its_hash_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token_hash, token = resolve_token(None, tmp_path)
    assert token is not None and len(token) >= 32
    path = tmp_path / TOKEN_FILE
    assert path.read_text().strip() == token_hash and token not in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_token(None, tmp_path) == (token_hash, None)  # not shown again
    assert check_bearer(f"Bearer {token}", token_hash) and not check_bearer("Bearer nope", token_hash)
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-123")
    env_hash, shown = resolve_token(None, tmp_path)
    assert shown is None and check_bearer("Bearer from-the-environment-123", env_hash)
    with pytest.raises(ValueError, match="no API token"):
        monkeypatch.delenv(TOKEN_ENV)
        resolve_token(None, None)


def test_serve_prints_a_new_token_once(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from fanbu.serve.server import serve

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    started: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(kwargs))
    first, second = Console(record=True, width=200), Console(record=True, width=200)
    serve(validate(ServeConfig, {}), registry, first)
    serve(validate(ServeConfig, {}), registry, second)
    shown = first.export_text()
    token = shown.split("\n")[1].strip()
    assert "API token (shown once" in shown and len(token) >= 32
    assert token not in second.export_text() and "API token" not in second.export_text()
    assert started[0]["host"] == "127.0.0.1"
    assert check_bearer(f"Bearer {token}", (registry.home / TOKEN_FILE).read_text().strip())


def test_serve_command_refuses_unknown_models_before_listening(registry: Registry) -> None:
    from typer.testing import CliRunner

    from fanbu.cli import app

    result = CliRunner().invoke(app, ["serve", "models=[ghost]", "--home", str(registry.home)])
    assert result.exit_code == 2 and "unknown model 'ghost'" in result.output
    result = CliRunner().invoke(app, ["serve", "host=0.0.0.0", "auth=false", "--home", str(registry.home)])
    assert result.exit_code == 2 and "auth is off but host" in result.output
