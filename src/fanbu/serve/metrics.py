"""Prometheus metrics of one server (its own registry, so several apps in one process do not clash)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Counters and histograms exported at ``GET /metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fanbu_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "fanbu_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter("fanbu_predictions", "Texts answered, by model.", ["model"], registry=r)
        self.escalations = Counter(
            "fanbu_escalations", "Texts a cascade passed to its large model.", ["cascade"], registry=r
        )
        self.generations = Counter(
            "fanbu_generations", "Completions answered, by model.", ["model"], registry=r
        )
        self.generated_tokens = Counter(
            "fanbu_generated_tokens", "New tokens generated, by model.", ["model"], registry=r
        )
        self.feedback = Counter("fanbu_feedback", "Feedback recorded.", registry=r)
        self.batch_size = Histogram(
            "fanbu_batch_texts", "Texts per micro-batch.", ["target"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("fanbu_queue_depth", "Requests waiting per target.", ["target"], registry=r)
        self.reloads = Counter(
            "fanbu_reloads", "Served references re-resolved by a reload, by result.", ["result"], registry=r
        )
        self.rejected = Counter("fanbu_rejected", "Requests refused, by reason.", ["reason"], registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
