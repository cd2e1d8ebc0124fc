"""Run items as Ray tasks: on a local Ray instance or on the cluster a recipe names."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Self, TypeVar

from fanbu.execute.base import ExecutionError, call, describe, item_failed, item_names, require_importable

T = TypeVar("T")
R = TypeVar("R")


def import_ray() -> ModuleType:
    """Ray, or an error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutionError(
            f"the Ray executor needs ray, which is not installed ({exc}); pip install 'fanbu[ray]', "
            "or set executor.kind: local"
        ) from None
    return ray


class RayExecutor:
    """Maps a function over items as Ray tasks, each reserving ``num_cpus_per_task`` CPUs.

    Connects with ``ray.init(address)`` unless Ray is already initialised in this process
    (``address=None`` starts a local Ray instance). :meth:`close` shuts down only an instance this
    executor started. The function must be an importable top-level callable.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_task: float = 1.0,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if num_cpus_per_task <= 0:
            raise ExecutionError(f"RayExecutor: num_cpus_per_task must be > 0, got {num_cpus_per_task}")
        self._ray = import_ray()
        self.address = address
        self.num_cpus_per_task = num_cpus_per_task
        self._started = False
        if not self._ray.is_initialized():
            try:
                self._ray.init(address=address, **(init_kwargs or {}))
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise ExecutionError(
                    f"could not start or reach {where}: {describe(exc)}; check executor.address "
                    "(`ray status` on the head node), or leave it unset for a local instance"
                ) from exc
            self._started = True

    def map(self, fn: Callable[[T], R], items: Sequence[T], names: Sequence[str] | None = None) -> list[R]:
        """``[fn(item) for item in items]`` as Ray tasks; the first failing item raises ExecutionError.

        After a failure the other tasks are not cancelled: map waits for them to end, drops their
        results, then raises (see :meth:`_drain`).

        Raises:
            ExecutionError: an item failed (its name and original message are in the error), or ``fn``
                is not an importable top-level callable.
        """
        ray = self._ray
        items = list(items)
        labels = item_names(items, names)
        require_importable(fn, "RayExecutor")
        if not items:
            return []
        task = ray.remote(call).options(num_cpus=self.num_cpus_per_task, max_retries=0)
        fn_ref = ray.put(fn)
        refs = [task.remote(fn_ref, item) for item in items]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            index = position[done[0]]
            try:
                status, value, trace = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a worker died, or an item failed to (de)serialise
                status, value, trace = "error", describe(exc), ""
            if status == "error":
                self._drain(pending)
                raise item_failed(labels[index], index, value, trace)
            results[index] = value
        return results

    def _drain(self, refs: list[Any]) -> None:
        """Wait for ``refs`` to finish and drop their results (and their errors).

        Why not ``ray.cancel``: cancelling a task that is finishing at that moment races Ray's own
        bookkeeping, and Ray 2.x then aborts the whole driver process (``Check failed: it !=
        submissible_tasks_.end() Tried to complete task that was not pending``, task_manager.cc), so
        one failed item would kill ``fanbu derive`` instead of raising its error. Ray has no safe way
        to cancel only the tasks that have not started, so every submitted task runs to the end.
        """
        if not refs:
            return
        # Errors here are dropped: the first failure is the error to report. fetch_local=False: only
        # wait for the tasks to end, without copying their results to this node.
        with contextlib.suppress(Exception):
            self._ray.wait(refs, num_returns=len(refs), timeout=None, fetch_local=False)

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
