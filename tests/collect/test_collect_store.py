"""The logging store on SQLite and on PostgreSQL (the same tests, selected by URL), concurrent writers too."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from fanbu.collect.schema import new_prediction_id
from fanbu.collect.store import Answer, LogStore, LogStoreError, Prediction, UnknownPredictionError
from fanbu.registry import Registry
from fanbu.registry.engine import sqlite_file
from tests.collect.writers import prediction, write
from tests.serve.helpers import database_url, store_urls


@pytest.fixture(params=store_urls())
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as db_url:
        yield db_url


def test_batch_round_trip_with_both_answers(url: str) -> None:
    with LogStore(url) as store:
        batch = [prediction("a", 0.9), prediction("b", 0.3, escalate=True)]
        store.log_batch(batch)
        logged = {p.id: p for p in store.predictions()}
    assert set(logged) == {p.id for p in batch}
    escalated = logged[batch[1].id]
    assert escalated.escalated and escalated.final.model_id == "large:v0" and escalated.final.label == "talk"
    assert {a.role for a in escalated.answers} == {"small", "large"}
    assert logged[batch[0].id].final.probabilities == pytest.approx((0.9, 0.1))


def test_a_batch_is_one_transaction_with_one_insert_per_table(url: str) -> None:
    statements: list[tuple[str, int]] = []  # (statement, rows it was run for)
    transactions: list[str] = []
    with LogStore(url) as store:
        batch = [prediction(f"text {i}", 0.5 + i / 100, escalate=i % 3 == 0) for i in range(40)]

        def on_execute(conn, cursor, statement, parameters, context, executemany) -> None:
            if statement.lstrip().upper().startswith("INSERT"):
                statements.append((statement.split("(")[0].strip(), len(parameters) if executemany else 1))

        def on_commit(conn) -> None:
            transactions.append("commit")

        event.listen(store._engine, "before_cursor_execute", on_execute)
        event.listen(store._engine, "commit", on_commit)
        store.log_batch(batch)
        event.remove(store._engine, "before_cursor_execute", on_execute)
        event.remove(store._engine, "commit", on_commit)
        logged = {p.id: p for p in store.predictions()}
    assert [rows for _, rows in statements] == [40, 40 + 14]  # every row, one INSERT per table
    assert "serve_predictions" in statements[0][0] and "serve_answers" in statements[1][0]
    assert transactions == ["commit"]
    assert set(logged) == {p.id for p in batch}
    for pred in batch:
        got = logged[pred.id]
        assert got.text == pred.text and got.text_hash == pred.text_hash and got.escalated == pred.escalated
        assert sorted(got.answers, key=str) == sorted(pred.answers, key=str)


def test_a_failed_batch_writes_nothing(url: str) -> None:
    with LogStore(url) as store:
        first = prediction("a")
        store.log_batch([first])
        with pytest.raises(LogStoreError, match="nothing was written"):
            store.log_batch([prediction("b"), first])  # the repeated id fails the whole transaction
        bad = Prediction(
            "x" * 32, "t", "topic", "c", "h" * 64, "text", (Answer("oracle", "m", "sci", 1.0, (1.0,)),)
        )
        with pytest.raises(LogStoreError, match="roles"):
            store.log_batch([prediction("c"), bad])
        assert store.count() == 1


def test_feedback_and_its_errors(url: str) -> None:
    with LogStore(url) as store:
        pred = prediction("a")
        store.log_batch([pred])
        store.add_feedback(pred.id, label="talk")
        store.add_feedback(pred.id, rating=4)
        assert [(f.label, f.rating) for f in store.feedback()] == [("talk", None), (None, 4)]
        assert store.prediction_head(pred.id) == ("small:v0", "topic")
        with pytest.raises(UnknownPredictionError, match="unknown prediction id"):
            store.add_feedback("0" * 32, label="sci")
        with pytest.raises(LogStoreError, match="a corrected label, a rating"):
            store.add_feedback(pred.id)


def test_confidences_one_per_distinct_text(url: str) -> None:
    with LogStore(url) as store:
        store.log_batch([prediction("a", 0.5), prediction("b", 0.6)])
        store.log_batch([prediction("a", 0.7), prediction("c", 0.4, head="other")])
        assert sorted(store.confidences("small:v0", "topic")) == [0.6, 0.7]
        assert store.existing_ids(["nope"]) == set()


def test_store_shares_the_registry_database(url: str) -> None:
    registry = Registry(url)
    try:
        registry.register_model(name="m", path="/m", kind="encoder")
        with LogStore(url) as store:
            store.log_batch([prediction("a")])
            assert store.count() == 1
        assert registry.latest("m") is not None
    finally:
        registry.close()


def test_concurrent_writers_lose_nothing(url: str) -> None:
    with LogStore(url):
        pass  # create the tables before the writers race
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=write, args=(url, 20, out)) for _ in range(3)]
    for proc in procs:
        proc.start()
    thread_ids: list[str] = []
    with LogStore(url) as store:

        def write_in_thread(k: int) -> None:
            for i in range(10):
                pred = prediction(f"thread {k} {i}")
                store.log_batch([pred])
                store.add_feedback(pred.id, rating=3)
                thread_ids.append(pred.id)

        threads = [threading.Thread(target=write_in_thread, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        process_ids = [i for _ in procs for i in out.get(timeout=120)]
        for thread in threads:
            thread.join(timeout=120)
        for proc in procs:
            proc.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        expected = set(process_ids) | set(thread_ids)
        assert len(expected) == 3 * 20 * 5 + 3 * 10
        assert store.existing_ids(sorted(expected)) == expected
        assert store.count() == len(expected) and len(store.feedback()) == 30


def test_clear_empties_the_log(url: str) -> None:
    with LogStore(url) as store:
        pred = prediction("a")
        store.log_batch([pred, prediction("b")])
        store.add_feedback(pred.id, rating=5)
        assert store.clear() == 2
        assert store.count() == 0 and store.feedback() == [] and store.predictions() == []


def test_prediction_ids_are_unique_hex_and_sort_by_creation_time() -> None:
    """The log's id indexes grow at their end only if later predictions get larger ids."""
    first = [new_prediction_id() for _ in range(1000)]
    time.sleep(0.002)  # the next millisecond at least
    later = new_prediction_id()
    assert len(set(first)) == len(first)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in [*first, later])
    assert all(later > i for i in first)
    assert int(later[:12], 16) == pytest.approx(time.time() * 1000, abs=5_000)


def test_a_background_checkpoint_store_leaves_the_log_to_its_thread(tmp_path: Path) -> None:
    """The server's store: its commits never checkpoint (autocheckpoint 0), its thread does, nothing is lost."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = LogStore(url, background_checkpoint=True)
    try:
        with store._write_engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        for i in range(40):
            store.log_batch([prediction(f"text {i} {j}") for j in range(5)])
        deadline = time.monotonic() + 10
        while store._checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store._checkpointer.checkpoints > 0
    finally:
        store.close()
    assert not store._checkpointer._thread.is_alive()
    with sqlite3.connect(tmp_path / "registry.db") as conn:  # a plain reader sees every row
        assert conn.execute("SELECT count(*) FROM serve_predictions").fetchone()[0] == 200
    with LogStore(url) as other, other._write_engine.connect() as conn:  # others keep SQLite's own checkpoint
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////srv/fanbu/registry.db", "/srv/fanbu/registry.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:registry.db?mode=ro&uri=true", None),
        ("postgresql+psycopg://fanbu@db/fanbu", None),
    ],
)
def test_only_a_plain_sqlite_file_gets_a_checkpoint_thread(url: str, expected: str | None) -> None:
    found = sqlite_file(url)
    assert (str(found) if found else None) == expected
