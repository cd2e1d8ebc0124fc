"""Run items on this machine: in this process, or in spawned worker processes sharing the cores."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from fanbu.execute.base import (
    ExecutionError,
    call,
    describe,
    fresh_generators,
    item_failed,
    item_names,
    require_importable,
)

T = TypeVar("T")
R = TypeVar("R")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def limit_threads(threads: int) -> None:
    """Worker initialiser: cap torch's (and BLAS's) intra-op threads so workers do not oversubscribe."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def watch_parent(parent: int, every: float = 1.0) -> None:
    """In a worker: exit once the process that started it is gone (killed outright, say, by a job
    scheduler or ``kill``), instead of running its items on for nobody. A daemon thread polls the parent id."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="fanbu-watch-parent", daemon=True).start()


def init_worker(threads: int, parent: int) -> None:
    """Worker initialiser: :func:`limit_threads`, and :func:`watch_parent` on the process that started it."""
    limit_threads(threads)
    watch_parent(parent)


class LocalExecutor:
    """Maps a function over items on this machine.

    ``workers=1`` runs the items in this process, in order. ``workers > 1`` runs them in that many
    spawned processes, each limited to ``max(1, cpu_count // workers)`` torch threads; the function
    must then be an importable top-level callable. Results come back in input order either way, and
    every item starts from the same seeded generators (:func:`~fanbu.execute.base.fresh_generators`).
    """

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ExecutionError(f"LocalExecutor: workers must be >= 1, got {workers}")
        self.workers = workers

    @property
    def threads_per_worker(self) -> int:
        """Torch threads each worker process may use."""
        return max(1, cpu_count() // self.workers)

    def map(self, fn: Callable[[T], R], items: Sequence[T], names: Sequence[str] | None = None) -> list[R]:
        """``[fn(item) for item in items]``; the first failing item raises :class:`ExecutionError`.

        Raises:
            ExecutionError: an item failed (its name and original message are in the error), or ``fn``
                cannot be sent to worker processes.
        """
        items = list(items)
        labels = item_names(items, names)
        if self.workers == 1:
            return self._map_here(fn, items, labels)
        require_importable(fn, f"LocalExecutor(workers={self.workers})")
        return self._map_processes(fn, items, labels)

    @staticmethod
    def _map_here(fn: Callable[[T], R], items: list[T], labels: list[str]) -> list[R]:
        """Run in this process, in order."""
        results: list[R] = []
        for index, item in enumerate(items):
            try:
                fresh_generators()
                results.append(fn(item))
            except Exception as exc:
                raise item_failed(labels[index], index, describe(exc)) from exc
        return results

    def _map_processes(self, fn: Callable[[T], R], items: list[T], labels: list[str]) -> list[R]:
        """Run in spawned processes; stop at the first failure (items not yet started are cancelled)."""
        if not items:
            return []
        results: list[Any] = [None] * len(items)
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(self.threads_per_worker, os.getpid()),
        )
        with pool:
            futures: dict[Future, int] = {pool.submit(call, fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    status, value, trace = future.result()
                except Exception as exc:  # noqa: BLE001 - unpicklable item or result, or a worker died
                    status, value, trace = "error", describe(exc), ""
                if status == "error":
                    for pending in futures:
                        pending.cancel()
                    raise item_failed(labels[index], index, value, trace)
                results[index] = value
        return results
