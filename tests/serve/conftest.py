"""Fixtures: a temporary registry with two tiny models and a configured app under FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from fanbu.config import validate
from fanbu.registry import Registry
from fanbu.serve import ServeConfig, create_app
from fanbu.serve.security import resolve_token
from tests.serve.helpers import TOKEN, register_tiny, register_tiny_lm


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "home")
    register_tiny(reg, "small", seed=0)
    register_tiny(reg, "large", seed=1, hidden=48)
    register_tiny(reg, "multi", seed=2, heads={"topic": ["sci", "talk", "rec"], "mood": ["neg", "pos"]})
    yield reg
    reg.close()


@pytest.fixture
def store(registry: Registry) -> Iterator[LogStore]:
    with LogStore(registry.url) as log_store:
        yield log_store


@pytest.fixture
def make_client(registry: Registry, store: LogStore) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**config)`` -> a started TestClient whose requests carry the token."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        config = validate(ServeConfig, {"token": TOKEN, **settings})
        token_hash = resolve_token(config.token, None)[0] if config.auth else None
        client = TestClient(create_app(config, registry, store, token_hash))
        client.__enter__()
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(cascades={"edge": {"small": "small", "large": "large", "threshold": 0.5}})


@pytest.fixture
def lms(registry: Registry) -> list[str]:
    """Two tiny random Llamas registered as ``lm-small`` and ``lm-large``."""
    register_tiny_lm(registry, "lm-small", seed=0)
    register_tiny_lm(registry, "lm-large", seed=1, hidden=48)
    return ["lm-small", "lm-large"]


@pytest.fixture
def lm_client(make_client: Callable[..., TestClient], lms: list[str]) -> TestClient:
    return make_client(models=lms)
