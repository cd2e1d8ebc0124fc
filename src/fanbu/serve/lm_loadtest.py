"""Streamed generation load against a running server: time to first token and tokens per second.

:func:`drive_stream` sends ``requests`` streamed ``/v1/completions`` requests (greedy, with
``stream_options.include_usage``) from ``concurrency`` threads, each on its own kept-alive connection
of the standard library's client, and times each one: the time to first token is from sending the
request to the first event that carries text; the tokens are the usage the last event reports.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from fanbu.serve.loadtest import latency_summary, run_concurrently


def read_stream(
    response: http.client.HTTPResponse, started: float
) -> tuple[float | None, str, dict[str, Any]]:
    """``(seconds to the first text, the text, the last event)`` of an OpenAI completion stream."""
    first: float | None = None
    pieces: list[str] = []
    last: dict[str, Any] = {}
    while True:
        line = response.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        payload = line[len(b"data: ") :]
        if payload == b"[DONE]":
            break
        event = json.loads(payload)
        if "error" in event:
            raise RuntimeError(f"stream failed: {event['error']}")
        text = event["choices"][0]["text"] if event.get("choices") else ""
        if text and first is None:
            first = time.perf_counter() - started
        pieces.append(text)
        last = event
    return first, "".join(pieces), last


def drive_stream(
    url: str,
    token: str,
    model: str,
    prompts: list[str],
    concurrency: int,
    requests: int,
    max_tokens: int,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Send streamed completions from ``concurrency`` threads (blocking).

    Returns:
        ``ok``, ``errors`` (status or error -> count), ``seconds``, ``ttft_p50_ms``, ``ttft_p95_ms``,
        ``tokens`` (completion tokens in all), ``tokens_per_s`` (all tokens over the wall time) and
        ``texts`` (prompt index -> completion).
    """
    counter = iter(range(requests))
    lock = threading.Lock()
    firsts: list[float] = []
    errors: dict[str, int] = {}
    tokens = 0
    texts: dict[int, str] = {}
    target = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def body(prompt: str) -> bytes:
        request = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return json.dumps(request).encode()

    def worker() -> None:
        nonlocal tokens
        connection = http.client.HTTPConnection(
            target.hostname or "127.0.0.1", target.port, timeout=timeout_s
        )
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                started = time.perf_counter()
                try:
                    connection.request(
                        "POST", "/v1/completions", body=body(prompts[i % len(prompts)]), headers=headers
                    )
                    response = connection.getresponse()
                    if response.status != 200:
                        response.read()
                        with lock:
                            errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                        continue
                    first, text, last = read_stream(response, started)
                    response.read()
                except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    connection.close()
                    continue
                with lock:
                    firsts.append(first if first is not None else time.perf_counter() - started)
                    tokens += int((last.get("usage") or {}).get("completion_tokens", 0))
                    texts[i % len(prompts)] = text
        finally:
            connection.close()

    seconds = run_concurrently(worker, concurrency)
    summary = latency_summary(firsts)
    return {
        "ok": len(firsts),
        "errors": errors,
        "seconds": seconds,
        "ttft_p50_ms": summary["p50_ms"],
        "ttft_p95_ms": summary["p95_ms"],
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "texts": texts,
    }
