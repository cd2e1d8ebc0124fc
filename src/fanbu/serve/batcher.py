"""Micro-batching: concurrent requests for one model and head are answered as one batch.

Each target has a bounded queue, ``workers`` compute threads and one commit thread. A compute thread
takes the waiting requests (up to ``max_batch`` texts) and runs the batch; the first request of a
batch waits for company until ``max_wait_s`` after its arrival, so a request that already waited
behind a running batch goes at once. One compute thread gathers at a time. With several workers (one
intra-op thread each, so that batches run on several cores at once) a batch takes only its fair share
of the texts in the server, waiting or computing (:func:`fair_share`): the workers' batches stay even
instead of one computing a long batch while another computes the stragglers, and no worker waits for
company while the server holds fewer requests than workers.

A batch that fails (a text the tokenizer or the model cannot take) is run again one request at a
time, and so is a commit that fails, so a bad request fails alone and never takes the requests it
was batched with down with it.

The *commit* thread hands finished batches to ``commit`` (the store's transaction; batches that
finished while the last commit ran go into one) and only then answers their requests. So the model
starts on the next batch while the last one is being committed, the event loop never sits between two
batches, and no request is answered before its commit returns. A full queue refuses at once
(:class:`Overloaded`, answered 429) instead of growing without bound.

A target retired by a reload is *drained* (:meth:`MicroBatcher.drain`): every request it already
holds, waiting, computing or committing, is answered on the model it was queued for before its
threads stop; :meth:`MicroBatcher.close` instead cancels the requests still waiting.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

JOIN_TIMEOUT_S = 30.0  # close() waits this long for a batch still being computed or committed
DRAIN_TIMEOUT_S = 120.0  # drain() waits this long for the requests in hand before it closes anyway


def fair_share(texts_in_server: int, workers: int, max_batch: int) -> int:
    """Most texts one batch should hold: all up to ``max_batch`` for one worker, else an even share."""
    if workers == 1:
        return max_batch
    return min(max_batch, max(1, math.ceil(texts_in_server / workers)))


class Overloaded(Exception):
    """The target's queue is full."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future[list[object]]
    arrived: float  # time.monotonic() when queued


@dataclass
class _Batch:
    items: list[_Item]
    results: Sequence[Any] = ()
    error: BaseException | None = None


class MicroBatcher(Generic[T]):
    """One queue, ``workers`` compute threads and one commit thread for one target.

    Args:
        run: Blocking function ``texts -> one result per text``; runs in the compute thread.
        max_batch: Most texts gathered into one call of ``run``.
        max_wait_s: How long after its arrival the first request of a batch waits for others.
        max_queue: Requests that may wait; one more raises :class:`Overloaded`.
        on_batch: Called with the size of each batch (for metrics).
        commit: Blocking function called with the results of one or more batches (in the order they
            finished) before their requests are answered; if it raises, those requests get its error.
        workers: Compute threads; ``run`` must be safe to call from that many threads at once.
    """

    def __init__(
        self,
        run: Callable[[list[str]], Sequence[T]],
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
        commit: Callable[[list[T]], None] | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._run = run
        self._commit = commit
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self.workers = workers
        self._lock = threading.Condition()  # guards the six attributes below
        self._waiting: deque[_Item] = deque()
        self._computed: deque[_Batch] = deque()
        self._closed = False
        self._gathering = False  # a compute thread is waiting for company for its batch
        self._computing = 0  # texts in the batches being computed
        self._unanswered = 0  # requests queued and not yet handed their results (or error)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    def depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return len(self._waiting)

    async def submit(self, texts: list[str]) -> list[T]:
        """Queue ``texts`` and wait for their results (in order)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[object]] = loop.create_future()
        with self._lock:
            self._start(loop)
            if len(self._waiting) >= self.max_queue:
                raise Overloaded
            self._waiting.append(_Item(list(texts), future, time.monotonic()))
            self._unanswered += 1
            self._lock.notify_all()
        return await future  # type: ignore[return-value]

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Answer every request already queued, then stop the threads (a target retired by a reload).

        Returns:
            Whether all were answered within ``timeout_s``; if not, the rest are cancelled by
            :meth:`close`.
        """
        answered = await asyncio.to_thread(self._wait_answered, timeout_s)
        await self.close()
        return answered

    def _wait_answered(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._unanswered > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    async def close(self) -> None:
        """Stop the threads (after the batches in hand); requests still waiting are cancelled."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            threads, self._threads = self._threads, []
            waiting = list(self._waiting)
            self._waiting.clear()
        for item in waiting:
            item.future.cancel()
        for thread in threads:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
        with self._lock:
            unanswered = [item for batch in self._computed for item in batch.items]
            self._computed.clear()
        for item in unanswered:  # computed after the commit thread stopped: never logged, never answered
            item.future.cancel()
        with self._lock:
            self._unanswered = 0
            self._lock.notify_all()

    # --------------------------------------------------------------------------- the threads

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the threads on first use (or again after :meth:`close`); call with the lock held."""
        self._loop = loop
        if self._threads and all(t.is_alive() for t in self._threads):
            return
        self._closed = False
        self._gathering = False
        self._computing = 0
        self._threads = [
            *(
                threading.Thread(target=self._compute_loop, name=f"fanbu-compute-{i}", daemon=True)
                for i in range(self.workers)
            ),
            threading.Thread(target=self._commit_loop, name="fanbu-commit", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _take(self) -> list[_Item] | None:
        """Block for the next batch of waiting requests; ``None`` once closed."""
        with self._lock:
            while (not self._waiting or self._gathering) and not self._closed:
                self._lock.wait()
            if self._closed:
                return None
            self._gathering = True  # the other compute threads leave the arrivals to this batch
            try:
                return self._gather()
            finally:
                self._gathering = False
                self._lock.notify_all()

    def _gather(self) -> list[_Item]:
        """Pop the first waiting request and the ones that join it; call with the lock held."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].texts)
        deadline = batch[0].arrived + self.max_wait_s  # it may have waited already, behind a batch
        while size < self._share(size):
            if not self._waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._lock.wait(remaining)
                continue
            item = self._waiting.popleft()
            batch.append(item)
            size += len(item.texts)
        self._computing += size
        return batch

    def _share(self, gathered: int) -> int:
        """:func:`fair_share` of the texts gathered, waiting and computing; call with the lock held."""
        in_server = gathered + sum(len(item.texts) for item in self._waiting) + self._computing
        return fair_share(in_server, self.workers, self.max_batch)

    def _compute_loop(self) -> None:
        while (items := self._take()) is not None:
            size = sum(len(item.texts) for item in items)
            if self._on_batch is not None:
                self._on_batch(size)
            try:
                batches = self._compute(items)
            finally:
                with self._lock:
                    self._computing -= size
            failed = [batch for batch in batches if batch.error is not None]
            done = [batch for batch in batches if batch.error is None]
            if failed:
                self._answer(failed)
            if self._commit is None:
                if done:
                    self._answer(done)
                continue
            with self._lock:
                self._computed.extend(done)
                self._lock.notify_all()

    def _compute(self, items: list[_Item]) -> list[_Batch]:
        """Run the batch; if it fails, run each request on its own, so only the bad ones fail."""
        batch = _Batch(items)
        try:
            batch.results = self._run([t for item in items for t in item.texts])
            return [batch]
        except Exception as exc:  # noqa: BLE001 - isolated below, or the request gets the error
            batch.error = exc
        if len(items) == 1:
            return [batch]
        return [one for item in items for one in self._compute([item])]

    def _commit_loop(self) -> None:
        while True:
            with self._lock:
                while not self._computed and not self._closed:
                    self._lock.wait()
                if not self._computed:
                    return
                batches = list(self._computed)
                self._computed.clear()
            self._commit_group(batches)

    def _commit_group(self, batches: list[_Batch]) -> None:
        """Commit ``batches`` in one call; if that fails, each on its own, so a bad batch fails alone."""
        assert self._commit is not None
        try:
            self._commit([r for batch in batches for r in batch.results])
        except Exception as exc:  # noqa: BLE001 - the batch's requests get the error
            if len(batches) > 1:
                for batch in batches:
                    self._commit_group([batch])
                return
            if len(batches[0].items) > 1:
                for one in _per_request(batches[0]):
                    self._commit_group([one])
                return
            batches[0].error = exc
        self._answer(batches)

    def _answer(self, batches: list[_Batch]) -> None:
        """Hand each request its slice of the results (or the error), on the event loop."""
        with self._lock:
            self._unanswered -= sum(len(batch.items) for batch in batches)
            self._lock.notify_all()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_settle, batches)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass


def _per_request(batch: _Batch) -> list[_Batch]:
    """One batch per request of ``batch``, each with its own slice of the results."""
    out, start = [], 0
    for item in batch.items:
        end = start + len(item.texts)
        out.append(_Batch([item], batch.results[start:end]))
        start = end
    return out


def _settle(batches: list[_Batch]) -> None:
    for batch in batches:
        start = 0
        for item in batch.items:
            end = start + len(item.texts)
            if not item.future.done():  # a client that went away is simply not answered
                if batch.error is not None:
                    item.future.set_exception(batch.error)
                else:
                    item.future.set_result(list(batch.results[start:end]))
            start = end
