"""Sustained load at a fraction of the server's measured capacity, with hostile requests mixed in.

:func:`capacity` is the server's throughput with ``concurrency`` closed-loop clients (good requests
only). :func:`sustain` then offers an *open-loop* stream at ``fraction`` of it for ``seconds``: request
``i`` is due at ``i / rate`` whatever happened to the others, ``hostile_share`` of them hostile. The
server must keep its latency (p95 of the good requests in the last minute against the first), its
memory (resident set of the server process, after warm-up against the end) and its manners (only
2xx, 4xx and 429 answers).
"""

from __future__ import annotations

import gc
import json
import queue
import random
import threading
import time
from collections import Counter
from typing import Any

import psutil

from fanbu.bench.reliability.hostile import Client, Sent, hostile_bodies
from fanbu.serve.loadtest import drive, latency_summary

BIN_S = 10.0  # the report's p95 per stretch of this many seconds


def capacity(url: str, token: str, model: str, texts: list[str], requests: int, concurrency: int = 8) -> float:
    """Requests per second the server answers with ``concurrency`` clients sending back to back."""
    drive(url, token, model, texts, concurrency, max(concurrency, requests // 10))  # warm-up
    run = drive(url, token, model, texts, concurrency, requests)
    if run["errors"]:
        raise RuntimeError(f"capacity run had errors (nothing hostile was sent): {run['errors']}")
    return float(run["rps"])


def sustain(
    url: str,
    token: str,
    model: str,
    texts: list[str],
    server_pid: int,
    rate: float,
    seconds: float,
    seed: int,
    max_text_chars: int,
    hostile_share: float = 0.1,
    clients: int = 32,
) -> dict[str, Any]:
    """Offer ``rate`` requests per second for ``seconds``; summarise latency, memory and statuses."""
    rng = random.Random(seed)
    bad = list(hostile_bodies(model, max_text_chars).items())
    total = int(rate * seconds)
    plan: queue.Queue[tuple[float, str, bytes] | None] = queue.Queue()
    for i in range(total):
        if rng.random() < hostile_share:
            kind, body = bad[rng.randrange(len(bad))]
        else:
            kind, body = "good", json.dumps({"model": model, "texts": [texts[rng.randrange(len(texts))]]}).encode()
        plan.put((i / rate, kind, body))
    for _ in range(clients):
        plan.put(None)
    process = psutil.Process(server_pid)
    rss_start = process.memory_info().rss
    start = time.perf_counter() + 0.5
    answers: list[tuple[float, float, Sent]] = []  # (due, lateness, answer)
    lock = threading.Lock()

    def worker() -> None:
        client = Client(url, token)
        while (job := plan.get()) is not None:
            due, kind, body = job
            wait = start + due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            lateness = max(0.0, -wait)
            answer = client.post("/v1/predict", body, kind)
            with lock:
                answers.append((due, lateness, answer))
        client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    # The driver's own full collections scan every answer kept so far: they pause its threads longer
    # as the run goes on, which would read as the server slowing down. The answers hold no cycles.
    gc.disable()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.enable()
    elapsed = time.perf_counter() - start
    rss_end = process.memory_info().rss
    window = min(60.0, seconds / 2)
    first = [a.seconds for due, _, a in answers if a.kind == "good" and a.status == 200 and due < window]
    last = [a.seconds for due, _, a in answers if a.kind == "good" and a.status == 200 and due >= seconds - window]
    statuses = Counter(str(a.status) for _, _, a in answers)
    good = [(due, a.seconds) for due, _, a in answers if a.kind == "good" and a.status == 200]
    bins = [[s for due, s in good if b * BIN_S <= due < (b + 1) * BIN_S] for b in range(int(seconds // BIN_S))]
    return {
        "seconds": elapsed,
        "offered_rps": rate,
        "rps": len(answers) / elapsed,
        "requests": len(answers),
        "window_s": window,
        "p95_first_minute_ms": latency_summary(first)["p95_ms"],
        "p95_last_minute_ms": latency_summary(last)["p95_ms"],
        "late_p95_ms": latency_summary([lateness for _, lateness, _ in answers])["p95_ms"],
        # the drift's shape: a steady climb (something grows) or one bad stretch (the machine)
        f"p95_ms_per_{BIN_S:g}s": [round(latency_summary(b)["p95_ms"], 2) if b else None for b in bins],
        "rss_start_mb": rss_start / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_growth_pct": 100.0 * (rss_end - rss_start) / rss_start,
        "status_counts": dict(sorted(statuses.items())),
        "good_failed": sum(a.status != 200 for _, _, a in answers if a.kind == "good"),
    }
