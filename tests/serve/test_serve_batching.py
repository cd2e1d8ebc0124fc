"""Micro-batching and the cascade threshold."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fanbu.collect.store import LogStore
from fanbu.errors import ConfigError
from fanbu.serve import MicroBatcher, Overloaded, tune_threshold
from fanbu.serve.batcher import fair_share


def test_concurrent_requests_share_one_batch() -> None:
    calls: list[list[str]] = []

    def run(texts: list[str]) -> list[str]:
        calls.append(texts)
        return [t.upper() for t in texts]

    async def main() -> list[list[str]]:
        batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.2, max_queue=16)
        results = await asyncio.gather(*(batcher.submit([f"t{i}", f"u{i}"]) for i in range(3)))
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results == [["T0", "U0"], ["T1", "U1"], ["T2", "U2"]]
    assert calls == [["t0", "u0", "t1", "u1", "t2", "u2"]]  # one batch for three requests


def test_max_batch_splits_and_a_failing_text_fails_only_its_own_request() -> None:
    calls: list[int] = []

    def run(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("model failed")
        return texts

    async def main() -> tuple[list[object], list[int]]:
        batcher = MicroBatcher(run, max_batch=2, max_wait_s=0.05, max_queue=16)
        ok = await asyncio.gather(*(batcher.submit([str(i)]) for i in range(4)))
        failed = await asyncio.gather(batcher.submit(["boom"]), batcher.submit(["x"]), return_exceptions=True)
        await batcher.close()
        return [*ok, *failed], list(calls)

    results, sizes = asyncio.run(main())
    assert results[:4] == [["0"], ["1"], ["2"], ["3"]]
    assert sizes[:2] == [2, 2]
    assert isinstance(results[4], RuntimeError)
    assert results[5] == ["x"]  # batched with "boom", answered on its own rerun


def test_a_poisoned_batch_is_rerun_request_by_request() -> None:
    """Six good and six bad requests at once: every good one is answered, every bad one fails alone."""
    batch_sizes: list[int] = []

    def run(texts: list[str]) -> list[str]:
        batch_sizes.append(len(texts))
        if any(t.startswith("bad") for t in texts):
            raise TypeError("TextEncodeInput must be Union[...]")
        return [t.upper() for t in texts]

    def commit(results: list[str]) -> None:
        assert all(r.startswith("GOOD") for r in results)

    async def main() -> list[object]:
        batcher = MicroBatcher(run, max_batch=32, max_wait_s=0.2, max_queue=64, commit=commit, workers=2)
        requests = [batcher.submit([f"{kind}{i}", f"{kind}{i}b"]) for i in range(6) for kind in ("good", "bad")]
        results = await asyncio.gather(*requests, return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    good, bad = results[0::2], results[1::2]
    assert good == [[f"GOOD{i}", f"GOOD{i}B"] for i in range(6)]
    assert all(isinstance(r, TypeError) for r in bad)
    assert max(batch_sizes) > 2  # they really were batched together before the reruns


def test_a_commit_that_fails_for_one_request_fails_only_that_request() -> None:
    def commit(results: list[str]) -> None:
        if "bad" in results:
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")

    async def main() -> list[object]:
        batcher = MicroBatcher(lambda texts: texts, max_batch=8, max_wait_s=0.2, max_queue=16, commit=commit)
        results = await asyncio.gather(*(batcher.submit([t]) for t in ("a", "bad", "c")), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results[0] == ["a"] and results[2] == ["c"]
    assert isinstance(results[1], ValueError)


def test_full_queue_raises_overloaded() -> None:
    gate = threading.Event()

    def run(texts: list[str]) -> list[str]:
        gate.wait(timeout=10)
        return texts

    async def main() -> None:
        batcher = MicroBatcher(run, max_batch=1, max_wait_s=0.0, max_queue=1)
        first = asyncio.create_task(batcher.submit(["a"]))
        while batcher.depth() or first.done():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the worker has taken "a" and is blocked in run
        second = asyncio.create_task(batcher.submit(["b"]))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await batcher.submit(["c"])
        gate.set()
        assert await first == ["a"] and await second == ["b"]
        await batcher.close()

    asyncio.run(main())


def test_next_batch_runs_while_the_last_commits_and_answers_wait_for_their_commit() -> None:
    events: list[str] = []
    committing = threading.Event()
    release = threading.Event()

    def run(texts: list[str]) -> list[str]:
        events.append(f"run {','.join(texts)}")
        return texts

    def commit(results: list[str]) -> None:
        events.append(f"commit {','.join(results)}")
        if results == ["a"]:
            committing.set()
            assert release.wait(timeout=10)

    async def main() -> tuple[list[str], list[str]]:
        batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.0, max_queue=16, commit=commit)
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.to_thread(committing.wait, 10)
        second = asyncio.create_task(batcher.submit(["b"]))
        while "run b" not in events:  # computed while "a" is still being committed
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()  # nothing is answered before its commit
        release.set()
        answers = [await first, await second]
        await batcher.close()
        return answers[0] + answers[1], list(events)

    answers, order = asyncio.run(main())
    assert answers == ["a", "b"]
    assert order == ["run a", "commit a", "run b", "commit b"]


def test_a_failed_commit_fails_only_its_own_batch() -> None:
    committing = threading.Event()
    release = threading.Event()
    groups: list[list[str]] = []

    def commit(results: list[str]) -> None:
        groups.append(list(results))
        if results == ["a"]:
            committing.set()
            assert release.wait(timeout=10)
        if "bad" in results:
            raise RuntimeError("database is locked")

    async def main() -> list[object]:
        batcher = MicroBatcher(lambda texts: texts, max_batch=1, max_wait_s=0.0, max_queue=16, commit=commit)
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.to_thread(committing.wait, 10)
        rest = [asyncio.create_task(batcher.submit([t])) for t in ("bad", "c")]
        while batcher.depth():  # both computed, waiting for the commit of "a"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results[0] == ["a"] and results[2] == ["c"]
    assert isinstance(results[1], RuntimeError)
    assert groups[:2] == [["a"], ["bad", "c"]]  # the two waiting batches were committed together first


def test_a_request_that_waited_behind_a_batch_does_not_wait_again() -> None:
    release = threading.Event()
    blocked = threading.Event()

    def run(texts: list[str]) -> list[str]:
        if texts == ["a"]:
            blocked.set()
            assert release.wait(timeout=10)
        return texts

    async def main() -> float:
        batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.8, max_queue=16)
        first = asyncio.create_task(batcher.submit(["a"]))  # alone: waits 0.8 s for company, then runs
        await asyncio.to_thread(blocked.wait, 10)
        second = asyncio.create_task(batcher.submit(["b"]))
        await asyncio.sleep(0.9)  # "b" has waited longer than max_wait behind the running batch
        started = time.monotonic()
        release.set()
        assert await first == ["a"] and await second == ["b"]
        elapsed = time.monotonic() - started
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < 0.6  # it did not wait another 0.8 s for company


def test_workers_compute_batches_at_once_and_every_answer_waits_for_its_commit() -> None:
    running: list[str] = []
    both_running = threading.Event()
    release = threading.Event()
    committed: list[str] = []

    def run(texts: list[str]) -> list[str]:
        running.append(texts[0])
        if len(running) == 2:
            both_running.set()
        assert release.wait(timeout=10)  # each batch holds its worker until both are computing
        return [t.upper() for t in texts]

    async def main() -> list[list[str]]:
        batcher = MicroBatcher(
            run, max_batch=2, max_wait_s=0.0, max_queue=16, commit=committed.extend, workers=2
        )
        tasks = [asyncio.create_task(batcher.submit([t])) for t in "abcd"]
        assert await asyncio.to_thread(both_running.wait, 10)  # two batches computed at once
        assert not any(task.done() for task in tasks)
        release.set()
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return results

    assert asyncio.run(main()) == [["A"], ["B"], ["C"], ["D"]]
    assert sorted(committed) == ["A", "B", "C", "D"]  # everything answered was committed


def test_fair_share_keeps_the_workers_batches_even() -> None:
    assert fair_share(100, workers=1, max_batch=32) == 32  # one worker takes all it may
    assert fair_share(16, workers=2, max_batch=32) == 8
    assert fair_share(17, workers=2, max_batch=4) == 4
    assert fair_share(1, workers=3, max_batch=32) == 1  # alone: no waiting for company


def test_a_batch_takes_its_fair_share_while_another_computes() -> None:
    sizes: list[int] = []
    first_running = threading.Event()
    release = threading.Event()

    def run(texts: list[str]) -> list[str]:
        sizes.append(len(texts))
        if texts == ["a"]:
            first_running.set()
            assert release.wait(timeout=10)
        return texts

    async def main() -> None:
        batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.3, max_queue=16, workers=2)
        first = asyncio.create_task(batcher.submit(["a"]))  # alone in the server: computed at once
        assert await asyncio.to_thread(first_running.wait, 10)
        with batcher._lock:  # the six arrive together (the lock is re-entrant: submit takes it too)
            rest = [asyncio.create_task(batcher.submit([t])) for t in "bcdefg"]
            await asyncio.sleep(0.05)
        assert await asyncio.gather(*rest) == [[t] for t in "bcdefg"]  # answered while "a" computes
        release.set()
        assert await first == ["a"]
        await batcher.close()

    asyncio.run(main())
    assert sizes == [1, 4, 2]  # 7 texts in the server, 2 workers: a share of 4, then the rest


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        MicroBatcher(lambda texts: texts, max_batch=1, max_wait_s=0.0, max_queue=1, workers=0)


def test_tune_threshold_hits_the_target_rate() -> None:
    confidences = [i / 100 for i in range(100)]
    threshold = tune_threshold(confidences, 0.3)
    assert sum(c < threshold for c in confidences) == 30
    assert tune_threshold([0.9] * 10, 0.3) == 0.9  # ties never escalate more than asked
    assert sum(c < tune_threshold(confidences, 1.0) for c in confidences) == 100
    assert tune_threshold([], 0.2) == 0.0
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        tune_threshold(confidences, 1.5)


def test_cascade_threshold_tuned_at_start_from_logged_confidences(make_client, store: LogStore) -> None:
    texts = [f"text number {i} about science and computer hardware" for i in range(40)]
    plain = make_client()
    for start in range(0, 40, 8):
        assert (
            plain.post("/v1/predict", json={"model": "small", "texts": texts[start : start + 8]}).status_code
            == 200
        )
    logged = store.confidences("small:v0", "topic")
    assert len(logged) == 40
    cascade = {
        "small": "small",
        "large": "large",
        "threshold": 0.99,
        "target_escalation_rate": 0.25,
        "min_samples": 40,
    }
    tuned = make_client(cascades={"edge": cascade})
    threshold = tuned.get("/v1/models").json()["routes"]["edge"]["threshold"]
    assert threshold == tune_threshold(logged, 0.25)
    preds = tuned.post("/v1/predict", json={"model": "edge", "texts": texts[:40]}).json()["predictions"]
    # Recomputed in a batch of another size, a confidence that ties the threshold may differ by float
    # noise (BLAS results depend on batch shape and memory alignment) and fall on either side of it.
    ties = sum(abs(c - threshold) <= 1e-5 for c in logged)
    assert ties >= 1 and abs(sum(p["escalated"] for p in preds) - 10) <= ties
    too_few = make_client(cascades={"edge": {**cascade, "min_samples": 1000}})
    assert too_few.get("/v1/models").json()["routes"]["edge"]["threshold"] == 0.99
