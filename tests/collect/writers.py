"""A writer process for the concurrency test (imports only the store: spawn starts fast)."""

from __future__ import annotations

import multiprocessing as mp
import uuid

from fanbu.collect.hashing import stored_form
from fanbu.collect.store import Answer, LogStore, Prediction


def prediction(text: str, confidence: float = 0.8, escalate: bool = False, head: str = "topic") -> Prediction:
    """A logged-prediction record for ``text`` (a small answer, plus a large one if ``escalate``)."""
    stored, digest = stored_form(text, "text")
    answers = [Answer("small", "small:v0", "sci", confidence, (confidence, 1 - confidence))]
    if escalate:
        answers.append(Answer("large", "large:v0", "talk", 0.9, (0.1, 0.9)))
    return Prediction(uuid.uuid4().hex, "edge", head, stored, digest, "text", tuple(answers))


def write(url: str, batches: int, out: mp.Queue) -> None:
    """Log ``batches`` batches of 5 and report their ids."""
    ids = []
    with LogStore(url) as store:
        for i in range(batches):
            batch = [prediction(f"text {i} {j}") for j in range(5)]
            store.log_batch(batch)
            ids += [p.id for p in batch]
    out.put(ids)
