"""Simulated deployment traffic: each domain's stream of texts through a real server, with corrections.

The cycle (and ``fanbu bench loop``) needs what a deployment would log: every domain's small model
answering a stream of its domain's texts, and a share of users correcting an answer. :func:`send_traffic`
sends each domain's texts to a running ``fanbu serve`` over HTTP (``/v1/predict``, in small batches, as
clients would), and for a seeded ``corrections`` share of the answered texts posts the true label to
``/v1/feedback``, confirmation or correction alike, as a user who checked the answer would. The server's
logging store keeps both, and ``fanbu collect`` curates them.

The texts must be traffic: texts no model of the cycle trained, validated or is tested on.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from fanbu.errors import FanbuError

#: Domain -> (texts, their true label names) a domain's users send.
Traffic = dict[str, tuple[list[str], list[str]]]


@dataclass
class DomainTraffic:
    """What one domain's stream did."""

    sent: int = 0
    answered: int = 0
    corrected: int = 0  # true labels posted to /v1/feedback
    wrong: int = 0  # answers that differed from the true label (all answers, not only the corrected)
    escalated: int = 0
    models: dict[str, int] = field(default_factory=dict)  # answering version -> answers

    @property
    def accuracy(self) -> float | None:
        """Share of answers that were right (the served model's online accuracy), None before any."""
        return None if not self.answered else 1.0 - self.wrong / self.answered


@dataclass
class TrafficReport:
    """Per domain, what the stream did, and how long it took."""

    domains: dict[str, DomainTraffic]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: per domain its counts and online accuracy, and the seconds."""
        return {
            "domains": {d: {**asdict(t), "accuracy": t.accuracy} for d, t in self.domains.items()},
            "seconds": self.seconds,
        }


def connect(url: str, token: str, timeout: float = 120.0) -> httpx.Client:
    """An HTTP client for the server at ``url`` (e.g. ``http://127.0.0.1:8000``) sending its bearer token."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def send_traffic(
    client: httpx.Client,
    routes: dict[str, str],
    traffic: Traffic,
    corrections: float,
    seed: int,
    batch_size: int = 8,
) -> TrafficReport:
    """Send each domain's texts to the model ``routes[domain]`` names, and correct a share of the answers.

    Args:
        client: A client of the server (:func:`connect`, or a test client) that carries its token.
        routes: Domain -> the served model or cascade its clients name (its head is the domain).
        traffic: Domain -> (texts, true label names).
        corrections: Share of the answered texts whose true label is posted to ``/v1/feedback`` (0..1).
        seed: Seeds which answers are corrected.
        batch_size: Texts per predict request.

    Raises:
        FanbuError: a domain without a route, or a request the server refused (its status and detail).
    """
    if not 0.0 <= corrections <= 1.0:
        raise FanbuError(f"corrections {corrections}: give a share between 0 and 1")
    missing = sorted(set(traffic) - set(routes))
    if missing:
        raise FanbuError(f"no served model for the traffic of {missing}; add them to the routes")
    rng = random.Random(seed)
    report: dict[str, DomainTraffic] = {}
    started = time.perf_counter()
    for domain in sorted(traffic):
        texts, labels = traffic[domain]
        if len(texts) != len(labels):
            raise FanbuError(f"traffic of {domain!r}: {len(texts)} texts but {len(labels)} labels")
        stats = report[domain] = DomainTraffic()
        for start in range(0, len(texts), batch_size):
            chunk, truth = texts[start : start + batch_size], labels[start : start + batch_size]
            body = {"model": routes[domain], "texts": chunk, "head": domain}
            answers = post(client, "/v1/predict", body)["predictions"]
            stats.sent += len(chunk)
            for answer, label in zip(answers, truth, strict=True):
                stats.answered += 1
                stats.wrong += answer["label"] != label
                stats.escalated += bool(answer["escalated"])
                stats.models[answer["model"]] = stats.models.get(answer["model"], 0) + 1
                if rng.random() < corrections:
                    post(client, "/v1/feedback", {"prediction_id": answer["id"], "label": label})
                    stats.corrected += 1
    return TrafficReport(report, time.perf_counter() - started)


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to the served ``path`` and return its JSON; any status but 200 is an error."""
    response = client.post(path, json=body)
    if response.status_code != 200:
        raise FanbuError(f"{path} answered {response.status_code}: {response.text[:500]}")
    return response.json()  # type: ignore[no-any-return]
