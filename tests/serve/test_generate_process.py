"""A real ``fanbu serve`` process serving tiny Llamas: streamed completions over HTTP, timed, logged."""

from __future__ import annotations

from pathlib import Path

import httpx

from fanbu.collect import LMCurateConfig, curate_lm, read_collected_lm
from fanbu.collect.store import LogStore
from fanbu.registry import Registry
from fanbu.serve.lm_loadtest import drive_stream
from fanbu.serve.loadtest import start_server
from tests.serve.helpers import TEXTS, TOKEN


def test_streamed_load_then_collect(registry: Registry, lms: list[str], tmp_path: Path) -> None:
    overrides = ["models=[lm-small]", "privacy=text", "generation.workers=2"]
    server = start_server(registry.home, overrides, TOKEN, tmp_path / "server.log")
    try:
        client = httpx.Client(timeout=120, headers=server.headers)
        body = {"model": "lm-small", "prompt": TEXTS[0], "max_tokens": 6, "temperature": 0}
        whole = client.post(f"{server.url}/v1/completions", json=body)
        assert whole.status_code == 200, whole.text
        load = drive_stream(server.url, TOKEN, "lm-small", TEXTS, concurrency=3, requests=6, max_tokens=6)
        assert load["ok"] == 6 and load["errors"] == {} and 0 < load["ttft_p50_ms"] <= load["ttft_p95_ms"]
        assert load["tokens"] > 0 and load["tokens_per_s"] > 0
        assert load["texts"][0] == whole.json()["choices"][0]["text"]  # streamed == whole, over real HTTP
        gen_id = whole.json()["id"]
        fixed = client.post(
            f"{server.url}/v1/feedback", json={"prediction_id": gen_id, "completion": " fixed"}
        )
        assert fixed.status_code == 200, fixed.text
        metrics = client.get(f"{server.url}/metrics").text
        assert 'fanbu_generations_total{model="lm-small:v0"} 7.0' in metrics
    finally:
        code = server.stop()
    assert code in (0, -15) and "Traceback" not in server.log.read_text()
    with LogStore(registry.url) as store:
        assert len(store.generations()) == 7
    record, counts = curate_lm(registry, LMCurateConfig(name="served"))
    assert counts["tiers"]["corrected"] == 1 and record.n_rows == len(set(TEXTS))
    corrected = [e for e in read_collected_lm(registry, "served") if e.tier == "corrected"]
    assert corrected[0].prompt == TEXTS[0] and corrected[0].completion == " fixed"
