"""The serve bench's machinery on tiny models: load from a second process, kill -9, the table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fanbu.bench.serve import accuracy_via, kill_under_load, measure, print_table
from fanbu.registry import Registry
from fanbu.serve.loadtest import latency_summary, start_server
from tests.serve.helpers import LABELS, TEXTS, TOKEN, register_tiny


def test_measure_accuracy_and_kill_on_a_real_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Registry.open(home) as registry:
        register_tiny(registry, "small", seed=0)
        register_tiny(registry, "large", seed=1, hidden=48)
        url = registry.url
    cascade = "cascades={edge: {small: small, large: large, threshold: 0.4}}"
    server = start_server(home, ["models=[small]", cascade], TOKEN, tmp_path / "server.log")
    try:
        speed = measure(server, "small", TEXTS, {1: 6, 4: 12})
        assert speed["c1"]["ok"] == 6 and speed["c4"]["ok"] == 12 and not speed["c4"]["errors"]
        assert speed["c4"]["rps"] > 0 and 0 < speed["c4"]["p50_ms"] <= speed["c4"]["p95_ms"]
        labels = [0, 1, 2, 0, 1, 2]
        acc, escalation = accuracy_via(server, "edge", TEXTS, labels, LABELS)
        assert 0.0 <= acc <= 1.0 and 0.0 <= escalation <= 1.0
        killed = kill_under_load(server, "small", TEXTS, url, tmp_path / "acks.txt", min_acks=20)
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert server.proc.returncode == -9
    assert killed["acknowledged"] >= 20 and killed["lost"] == 0


def test_latency_summary_and_table() -> None:
    summary = latency_summary([0.010] * 94 + [0.100] * 6)
    assert summary["p50_ms"] == 10.0 and summary["p95_ms"] == 100.0
    assert latency_summary([]) == {"p50_ms": 0.0, "p95_ms": 0.0}
    speed = {
        "c1": {"rps": 50.0, "p50_ms": 5.0, "p95_ms": 8.0},
        "c16": {"rps": 200.0, "p50_ms": 20.0, "p95_ms": 30.0},
    }
    report = {
        "quick": True,
        "domain": "rec",
        "seconds": 12.0,
        "models": {"small": "rec.quantize", "large": "rec.finetune"},
        "small": speed,
        "large": speed,
        "p95_ratio_c16": 1.0,
        "lost_after_kill": 0,
        "acknowledged_before_kill": 100,
        "cascade": {
            "acc": 0.9,
            "large_acc": 0.9,
            "small_acc": 0.85,
            "escalation_rate": 0.2,
            "threshold": 0.8,
        },
    }
    console = Console(record=True, width=160)
    print_table(report, console)
    text = console.export_text()
    assert "small (rec.quantize)" in text and "escalation 0.200" in text and "0 of 100" in text
