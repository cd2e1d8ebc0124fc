"""Size and speed: parameter counts, bytes on disk, latency percentiles and throughput.

Speed is measured on a ``predict`` callable (a batch of texts in, anything out), so the same code
times a classifier, a causal LM or a served endpoint. Clocks are ``time.perf_counter``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fanbu.evaluate.metrics import EvaluationError
from fanbu.io import dir_size

Predict = Callable[[Sequence[str]], Any]


def param_count(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters, each shared (tied) parameter counted once.

    ``module.parameters()`` already drops repeated Parameter objects; distinct Parameters that view
    the same storage (ties made by assigning ``.data``) are folded too.
    """
    seen: set[tuple[int, int, tuple[int, ...], tuple[int, ...]]] = set()
    total = 0
    for param in module.parameters():
        if trainable_only and not param.requires_grad:
            continue
        if param.device.type != "meta" and param.data_ptr() != 0:
            key = (
                param.untyped_storage().data_ptr(),
                param.storage_offset(),
                tuple(param.shape),
                tuple(param.stride()),
            )
            if key in seen:
                continue
            seen.add(key)
        total += param.numel()
    return total


def size_on_disk(path: str | Path) -> int:
    """Bytes of the files under a model directory (or of a single weights file)."""
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"{target} does not exist; pass the directory a model was saved to")
    return dir_size(target)


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of ``iterations`` timed calls at one batch size."""

    p50_ms: float
    p95_ms: float
    mean_ms: float
    iterations: int
    batch_size: int


def _check(texts: Sequence[str], batch_size: int, warmup: int, iterations: int) -> None:
    """Reject empty inputs and non-positive counts."""
    if len(texts) == 0:
        raise EvaluationError("no texts to time predict on; pass at least one example text")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if warmup < 0:
        raise EvaluationError(f"warmup must be >= 0, got {warmup}")
    if iterations < 1:
        raise EvaluationError(f"iterations must be >= 1, got {iterations}")


def _batches(texts: Sequence[str], batch_size: int) -> Iterator[list[str]]:
    """Endless consecutive batches of ``batch_size`` texts, wrapping around ``texts``."""
    cursor = 0
    while True:
        yield [texts[(cursor + k) % len(texts)] for k in range(batch_size)]
        cursor = (cursor + batch_size) % len(texts)


def measure_latency(
    predict: Predict, texts: Sequence[str], batch_size: int = 1, warmup: int = 3, iterations: int = 30
) -> LatencyStats:
    """Time ``iterations`` calls of ``predict`` on successive batches, after ``warmup`` untimed ones.

    Raises:
        EvaluationError: ``texts`` is empty or a count is out of range.
    """
    _check(texts, batch_size, warmup, iterations)
    batches = _batches(texts, batch_size)
    for _ in range(warmup):
        predict(next(batches))
    times_ms = np.empty(iterations)  # (iterations,)
    for i in range(iterations):
        batch = next(batches)
        start = time.perf_counter()
        predict(batch)
        times_ms[i] = (time.perf_counter() - start) * 1000.0
    return LatencyStats(
        p50_ms=float(np.percentile(times_ms, 50)),
        p95_ms=float(np.percentile(times_ms, 95)),
        mean_ms=float(times_ms.mean()),
        iterations=iterations,
        batch_size=batch_size,
    )


def measure_throughput(
    predict: Predict, texts: Sequence[str], batch_size: int = 32, warmup: int = 1, iterations: int = 5
) -> float:
    """Items per second over ``iterations`` back-to-back batches, after ``warmup`` untimed ones.

    Raises:
        EvaluationError: ``texts`` is empty or a count is out of range.
    """
    _check(texts, batch_size, warmup, iterations)
    batches = _batches(texts, batch_size)
    for _ in range(warmup):
        predict(next(batches))
    timed = [next(batches) for _ in range(iterations)]
    start = time.perf_counter()
    for batch in timed:
        predict(batch)
    elapsed = time.perf_counter() - start
    if elapsed <= 0.0:
        raise EvaluationError("the clock did not advance while timing predict; raise iterations")
    return iterations * batch_size / elapsed


def speed_profile(
    predict: Predict, texts: Sequence[str], *, iterations_b1: int = 30, iterations_b32: int = 5
) -> dict[str, float]:
    """CPU latency p50/p95 at batch 1 and throughput at batch 32, as a flat dict for reports."""
    latency = measure_latency(predict, texts, batch_size=1, iterations=iterations_b1)
    throughput = measure_throughput(predict, texts, batch_size=32, iterations=iterations_b32)
    return {
        "latency_b1_p50_ms": latency.p50_ms,
        "latency_b1_p95_ms": latency.p95_ms,
        "throughput_b32": throughput,
    }
