"""kill -9 at random moments, then a rerun and the doctor: is anything lost, half-written or dangling?

* :func:`kill_commands` runs a fanbu command (``derive``, ``feedback``) in its own process group,
  SIGKILLs the group at a random moment of a run, asks :func:`fanbu.registry.doctor.diagnose` what
  it left, and after the last kill reruns the command to the end and asks again.
* :func:`kill_server` SIGKILLs ``fanbu serve`` under load while a second client sends feedback for
  every acknowledged prediction; every prediction and feedback the server acknowledged must be in
  the store afterwards, and the restarted server must answer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanbu.bench.reliability.hostile import Client
from fanbu.collect.store import LogStore
from fanbu.serve.loadtest import drive_in_process, start_server

#: The doctor's counts for the registry under test: ``corrupt_artefacts``, ``registry_mismatches``, ``leftovers``.
Diagnose = Callable[[], dict[str, int]]


def run_fanbu(args: list[str], log: Path, kill_after_s: float | None = None) -> tuple[int, float]:
    """``python -m fanbu ARGS`` in its own process group; SIGKILL the group after ``kill_after_s``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanbu", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
    try:
        code = proc.wait(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and anything it spawned, mid-write or not
        code = proc.wait()
    return code, time.perf_counter() - started


def kill_commands(
    target: str, args: list[str], work: Path, kills: int, full_seconds: float, diagnose: Diagnose, seed: int
) -> dict[str, Any]:
    """``kills`` runs of ``fanbu ARGS`` killed at uniform moments of ``full_seconds``, then a full rerun.

    ``diagnose`` returns the doctor's counts (``corrupt_artefacts``, ``registry_mismatches``,
    ``leftovers``); after each kill they are recorded, and the target figures are those after the
    final rerun.
    """
    rng = random.Random(seed)
    after_kill: list[dict[str, Any]] = []
    for i in range(kills):
        moment = rng.uniform(0.05, 0.95) * full_seconds
        code, seconds = run_fanbu(args, work / f"{target}-kill{i}.log", kill_after_s=moment)
        after_kill.append({"at_s": round(moment, 2), "finished_first": code == 0, **diagnose()})
    code, seconds = run_fanbu(args, work / f"{target}-rerun.log")
    final = diagnose()
    return {
        "target": target,
        "kills": sum(not k["finished_first"] for k in after_kill),
        "lost_records": 0,  # a derive or feedback run acknowledges nothing to a client
        "rerun_exit_code": code,
        "rerun_seconds": seconds,
        "corrupt_artefacts": final["corrupt_artefacts"],
        "registry_mismatches": final["registry_mismatches"],
        "leftovers": final["leftovers"],
        "after_each_kill": after_kill,
    }


def kill_server(
    home: Path,
    overrides: list[str],
    token: str,
    url: str,
    model: str,
    texts: list[str],
    work: Path,
    kills: int,
    seed: int,
    diagnose: Diagnose,
) -> dict[str, Any]:
    """``kills`` times: serve under load, send feedback for what is acknowledged, kill -9 at a random count."""
    rng = random.Random(seed)
    predictions: set[str] = set()
    feedback: set[str] = set()
    rounds: list[dict[str, Any]] = []
    for i in range(kills):
        server = start_server(home, overrides, token, work / f"serve-kill{i}.log")
        acks = work / f"serve-acks{i}.txt"
        acks.write_text("")
        load = drive_in_process(
            url=server.url, token=token, model=model, texts=texts, concurrency=8, requests=100_000,
            ack_file=str(acks),
        )
        sent_feedback, stop, sender = _feedback_sender(server.url, token, acks)
        at = rng.randint(20, 200)
        deadline = time.monotonic() + 300
        while len(acks.read_text().split()) < at and not load.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()
        stop.set()
        sender.join(timeout=60)
        run = load.result(timeout=300)
        acked = set(acks.read_text().split()) | set(run["ids"])
        predictions |= acked
        feedback |= sent_feedback
        rounds.append({"killed_at_acks": at, "acknowledged": len(acked), "feedback": len(sent_feedback)})
    server = start_server(home, overrides, token, work / "serve-rerun.log")  # the rerun answers again
    answer = Client(server.url, token).post(
        "/v1/predict", json.dumps({"model": model, "texts": texts[:2]}).encode(), "good"
    )
    server.stop()
    with LogStore(url) as store:
        found = store.existing_ids(sorted(predictions))
        recorded = {f.prediction_id for f in store.feedback()}
    final = diagnose()
    return {
        "target": "serve",
        "kills": kills,
        "acknowledged": len(predictions),
        "acknowledged_feedback": len(feedback),
        "lost_records": len(predictions - found) + len(feedback - recorded),
        "rerun_status": answer.status,
        "corrupt_artefacts": final["corrupt_artefacts"],
        "registry_mismatches": final["registry_mismatches"],
        "leftovers": final["leftovers"],
        "rounds": rounds,
    }


def _feedback_sender(url: str, token: str, acks: Path) -> tuple[set[str], threading.Event, threading.Thread]:
    """A thread that rates every acknowledged prediction as it appears; the set holds the 200s."""
    recorded: set[str] = set()
    stop = threading.Event()

    def run() -> None:
        client = Client(url, token, timeout_s=10)
        done: set[str] = set()
        while not stop.is_set():
            for pid in acks.read_text().split():
                if pid in done or stop.is_set():
                    continue
                done.add(pid)
                body = json.dumps({"prediction_id": pid, "rating": 4}).encode()
                if client.post("/v1/feedback", body, "feedback").status == 200:
                    recorded.add(pid)
            time.sleep(0.01)
        client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return recorded, stop, thread
