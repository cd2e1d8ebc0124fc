"""Bad requests sent at the same moment as good ones, to the same model: do the good ones survive?

Each round starts ``bad + good`` threads behind one barrier, so their requests reach the server
together and are micro-batched together; a good request fails if its answer is not a 200 with one
prediction per text. This is the reported failure (a lone surrogate made five of six neighbours
answer 500), measured on a real server.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from fanbu.bench.reliability.hostile import Client, Sent, hostile_bodies


def neighbours(
    url: str, token: str, model: str, texts: list[str], rounds: int, max_text_chars: int, per_round: int = 6
) -> dict[str, Any]:
    """``rounds`` rounds of ``per_round`` bad and ``per_round`` good requests at once.

    Returns:
        ``bad_requests``, ``good_requests``, ``good_failed``, ``bad_5xx`` (bad requests answered 5xx
        or not at all) and ``statuses`` (kind -> status -> count).
    """
    kinds = list(hostile_bodies(model, max_text_chars).items())
    sent: list[Sent] = []
    lock = threading.Lock()
    for round_ in range(rounds):
        barrier = threading.Barrier(2 * per_round)
        jobs: list[tuple[str, bytes]] = []
        for i in range(per_round):
            kind, body = kinds[(round_ * per_round + i) % len(kinds)]
            jobs.append((kind, body))
            good = [texts[(round_ * per_round + i + j) % len(texts)] for j in range(2)]
            jobs.append(("good", json.dumps({"model": model, "texts": good}).encode()))

        def send(kind: str, body: bytes, barrier: threading.Barrier = barrier) -> None:
            client = Client(url, token)
            barrier.wait(timeout=60)
            answer = client.post("/v1/predict", body, kind)
            client.close()
            with lock:
                sent.append(answer)

        threads = [threading.Thread(target=send, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    good = [s for s in sent if s.kind == "good"]
    bad = [s for s in sent if s.kind != "good"]
    statuses: dict[str, Counter[int]] = {}
    for s in sent:
        statuses.setdefault(s.kind, Counter())[s.status] += 1
    return {
        "bad_requests": len(bad),
        "good_requests": len(good),
        "good_failed": sum(not _answered(s, 2) for s in good),
        "bad_5xx": sum(s.status == 0 or s.status >= 500 for s in bad),
        "statuses": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in sorted(statuses.items())},
    }


def _answered(sent: Sent, texts: int) -> bool:
    """A 200 with one prediction per text."""
    if sent.status != 200:
        return False
    try:
        return len(json.loads(sent.body)["predictions"]) == texts
    except (ValueError, KeyError, TypeError):
        return False
