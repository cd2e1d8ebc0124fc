"""Simulated traffic through a real app: every text answered and logged, a seeded share corrected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from fanbu.config import validate
from fanbu.cycle.traffic import send_traffic
from fanbu.errors import FanbuError
from fanbu.registry import Registry
from fanbu.serve import ServeConfig, create_app
from fanbu.serve.security import resolve_token
from tests.serve.helpers import LABELS, TEXTS, TOKEN, register_tiny


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, LogStore]]:
    registry = Registry.open(tmp_path / "home")
    register_tiny(registry, "small", seed=0)
    with LogStore(registry.url) as store:
        config = validate(ServeConfig, {"token": TOKEN})
        app = create_app(config, registry, store, resolve_token(config.token, None)[0])
        with TestClient(app) as client:
            client.headers["Authorization"] = f"Bearer {TOKEN}"
            yield client, store
    registry.close()


def traffic(n: int) -> dict[str, tuple[list[str], list[str]]]:
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(n)]
    return {"topic": (texts, [LABELS[i % len(LABELS)] for i in range(n)])}


def test_every_text_is_answered_and_logged_and_a_seeded_share_corrected(served) -> None:
    client, store = served
    report = send_traffic(client, {"topic": "small"}, traffic(60), corrections=0.25, seed=3, batch_size=7)
    stats = report.domains["topic"]
    assert stats.sent == stats.answered == 60
    assert 5 <= stats.corrected <= 25 and list(stats.models) == ["small:v0"]
    assert 0.0 <= stats.accuracy <= 1.0 and stats.wrong == round(60 * (1 - stats.accuracy))
    assert len(store.predictions(["topic"])) == 60
    feedback = store.feedback()
    assert len(feedback) == stats.corrected and all(item.label in LABELS for item in feedback)
    again = send_traffic(client, {"topic": "small"}, traffic(60), corrections=0.25, seed=3, batch_size=7)
    assert again.domains["topic"].corrected == stats.corrected  # the seed decides which answers are corrected
    assert report.as_dict()["domains"]["topic"]["sent"] == 60


def test_no_correction_at_zero_and_clear_errors(served) -> None:
    client, store = served
    assert send_traffic(client, {"topic": "small"}, traffic(10), 0.0, seed=0).domains["topic"].corrected == 0
    assert store.feedback() == []
    with pytest.raises(FanbuError, match="no served model for the traffic of"):
        send_traffic(client, {}, traffic(4), 0.1, seed=0)
    with pytest.raises(FanbuError, match="between 0 and 1"):
        send_traffic(client, {"topic": "small"}, traffic(4), 1.5, seed=0)
    with pytest.raises(FanbuError, match="/v1/predict answered 404"):
        send_traffic(client, {"topic": "nowhere"}, traffic(4), 0.1, seed=0)
