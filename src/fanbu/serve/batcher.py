"""Micro-batching: concurrent requests for one model and head are answered as one batch.

Each target has a bounded asyncio queue and one worker. The worker takes the first waiting request,
gathers more for up to ``max_wait_s`` or until ``max_batch`` texts, and runs the batch function in a
thread (prediction and the store's transaction), then hands each request its slice of the results.
A full queue refuses at once (:class:`Overloaded`, answered 429) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Overloaded(Exception):
    """The target's queue is full."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future[list[object]]


class MicroBatcher(Generic[T]):
    """One queue and one worker for one target.

    Args:
        run: Blocking function ``texts -> one result per text``; runs in a worker thread.
        max_batch: Most texts gathered into one call of ``run``.
        max_wait_s: How long the first request waits for others.
        max_queue: Requests that may wait; one more raises :class:`Overloaded`.
        on_batch: Called with the size of each batch (for metrics).
    """

    def __init__(
        self,
        run: Callable[[list[str]], Sequence[T]],
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._task: asyncio.Task[None] | None = None

    def depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return self._queue.qsize()

    async def submit(self, texts: list[str]) -> list[T]:
        """Queue ``texts`` and wait for their results (in order)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._worker())
        future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(list(texts), future))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await future  # type: ignore[return-value]

    async def close(self) -> None:
        """Stop the worker; requests still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def _gather(self) -> list[_Item]:
        batch = [await self._queue.get()]
        size = len(batch[0].texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):  # Queue.get keeps its item if cancelled
                        item = await self._queue.get()
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _worker(self) -> None:
        while True:
            batch = await self._gather()
            texts = [t for item in batch for t in item.texts]
            if self._on_batch is not None:
                self._on_batch(len(texts))
            try:
                results = await asyncio.to_thread(self._run, texts)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            start = 0
            for item in batch:
                end = start + len(item.texts)
                if not item.future.done():  # a client that went away is simply not answered
                    item.future.set_result(list(results[start:end]))
                start = end
