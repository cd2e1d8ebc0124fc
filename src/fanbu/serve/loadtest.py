"""A real server in its own process, and load against it from another: for the bench and the tests.

:func:`start_server` runs ``python -m fanbu serve`` on a free loopback port and waits for ``/health``;
:func:`drive` sends one-text predict requests from ``concurrency`` threads and measures each one;
:func:`drive_in_process` runs :func:`drive` in a second process (spawned), so that the client's work
does not run in the server's interpreter.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from fanbu.errors import FanbuError
from fanbu.serve.security import TOKEN_ENV


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``fanbu serve`` child process."""

    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header for this server."""
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (uvicorn shuts down gracefully) and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a crash."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def start_server(
    home: Path, overrides: list[str], token: str, log: Path, timeout: float = 180.0
) -> ServerProcess:
    """Start ``fanbu serve --home home`` with ``overrides`` on a free port and wait until it answers.

    Raises:
        FanbuError: the process exited or did not answer ``/health`` within ``timeout`` (its log is quoted).
    """
    port = free_port()
    env = {**os.environ, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "fanbu", "serve", "--home", str(home), f"port={port}", *overrides]
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", token, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FanbuError(f"fanbu serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise FanbuError(f"fanbu serve did not answer /health within {timeout:.0f} s: {log.read_text()[-2000:]}")


def drive(
    url: str,
    token: str,
    model: str,
    texts: list[str],
    concurrency: int,
    requests: int,
    ack_file: str | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Send ``requests`` one-text predict requests from ``concurrency`` threads (blocking).

    Each thread keeps one connection open and stops at its first transport error (the server is
    gone). The client is the standard library's, whose cost per request is a fraction of a
    millisecond: on a small machine a heavier client would take the cores the server needs. With
    ``ack_file``, every acknowledged prediction id is appended to it as soon as its response arrives.

    Returns:
        ``ok``, ``errors`` (status or error name -> count), ``seconds``, ``rps``, ``p50_ms``,
        ``p95_ms`` and ``ids`` (acknowledged prediction ids).
    """
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    ids: list[str] = []
    acks = open(ack_file, "a", encoding="utf-8") if ack_file else None  # noqa: SIM115 - shared by threads
    target = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [  # the bytes httpx would send for json=...
        json.dumps({"model": model, "texts": [t]}, ensure_ascii=False, separators=(",", ":")).encode()
        for t in texts
    ]

    def worker() -> None:
        connection = http.client.HTTPConnection(
            target.hostname or "127.0.0.1", target.port, timeout=timeout_s
        )
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                _drop_if_closed(connection)
                started = time.perf_counter()
                try:
                    connection.request("POST", "/v1/predict", body=bodies[i % len(bodies)], headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status != 200:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                        continue
                    latencies.append(elapsed)
                    new = [p["id"] for p in json.loads(payload)["predictions"]]
                    ids.extend(new)
                    if acks is not None:
                        acks.write("".join(f"{pid}\n" for pid in new))
                        acks.flush()
        finally:
            connection.close()

    seconds = run_concurrently(worker, concurrency)
    if acks is not None:
        acks.close()
    return {
        "ok": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        **latency_summary(latencies),
        "ids": ids,
    }


def _drop_if_closed(connection: http.client.HTTPConnection) -> None:
    """Close a kept-alive connection that the server has closed meanwhile, so the next request reconnects.

    An idle connection that is readable has been closed by the server (its keep-alive timeout);
    httpx makes the same check before it reuses a pooled connection.
    """
    sock = connection.sock
    if sock is not None and select.select([sock], [], [], 0)[0]:
        connection.close()


def run_concurrently(worker: Callable[[], None], concurrency: int) -> float:
    """Run ``worker`` in ``concurrency`` threads at once; the wall-clock seconds until the last one ends."""
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds (0 when there is nothing to summarise)."""
    if len(latencies) < 2:
        value = latencies[0] * 1000 if latencies else 0.0
        return {"p50_ms": value, "p95_ms": value}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": statistics.median(latencies) * 1000, "p95_ms": cuts[94] * 1000}


def drive_in_process(**kwargs: Any) -> Future[dict[str, Any]]:
    """Run :func:`drive` in a freshly spawned process; returns its future (the pool shuts down after it)."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
    future = pool.submit(drive, **kwargs)
    future.add_done_callback(lambda _: pool.shutdown(wait=False))
    return future
