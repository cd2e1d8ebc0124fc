"""The logging store: every prediction and every feedback, each batch in one transaction.

It lives in the registry's database (the same SQLAlchemy URL: SQLite in WAL mode by default, or
PostgreSQL), opened with the registry's engines, so writes from several server processes queue on
the database's lock instead of failing. A call returns only after its transaction committed: a server
that answers after :meth:`LogStore.log_batch` returns loses no acknowledged prediction to a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from fanbu.collect.lm_store import Answered, GenerationLog
from fanbu.collect.schema import AnswerRow, FeedbackRow, LogBase, PredictionRow
from fanbu.errors import FanbuError
from fanbu.registry.schema import utcnow
from fanbu.registry.sqlstore import SqlStore

ROLES = ("single", "small", "large")


class LogStoreError(FanbuError):
    """The logging store refused an operation or could not be reached."""


class UnknownPredictionError(LogStoreError):
    """A feedback names a prediction id the store does not hold."""


@dataclass(frozen=True)
class Answer:
    """One model's answer: its label, confidence (top probability) and every class probability."""

    role: str
    model_id: str
    label: str
    confidence: float
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class Prediction(Answered[Answer]):
    """A logged prediction with its answers (final answer = the ``large`` one when escalated)."""

    id: str
    target: str
    head: str
    text: str | None
    text_hash: str
    privacy: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class Feedback:
    """What a user said about a prediction."""

    prediction_id: str
    label: str | None
    rating: int | None


class LogStore(GenerationLog, SqlStore):
    """Predictions, generations and feedback in the registry's database (tables ``serve_*``, created on open).

    Args:
        url: The registry's SQLAlchemy URL (``Registry.url``).
        background_checkpoint: On SQLite, a thread of its own checkpoints the write-ahead log, so no
            commit waits for that (:mod:`fanbu.registry.checkpoint`); the server opens its store so.
    """

    error = LogStoreError
    open_message = "cannot open the logging store in {url}: {reason}"
    busy_message = "logging store {url}: {reason} (retry)"

    def __init__(self, url: str, background_checkpoint: bool = False) -> None:
        super().__init__(url, LogBase.metadata, background_checkpoint)

    def log_batch(self, predictions: Sequence[Prediction]) -> None:
        """Write ``predictions`` and all their answers in one transaction (all or nothing).

        Each table gets one INSERT run for all its rows (``executemany``), not an ORM object per row:
        the server logs every micro-batch here before it answers, so the per-row cost is per request.
        """
        now = utcnow()
        rows: list[dict[str, Any]] = []
        answers: list[dict[str, Any]] = []
        for pred in predictions:
            if not pred.answers or any(a.role not in ROLES for a in pred.answers):
                raise LogStoreError(f"prediction {pred.id}: answers need roles from {ROLES}")
            final = pred.final
            rows.append(
                {
                    "id": pred.id,
                    "created_at": now,
                    "target": pred.target,
                    "model_id": final.model_id,
                    "head": pred.head,
                    "text": pred.text,
                    "text_hash": pred.text_hash,
                    "privacy": pred.privacy,
                    "label": final.label,
                    "confidence": final.confidence,
                    "escalated": pred.escalated,
                }
            )
            answers.extend(
                {
                    "prediction_id": pred.id,
                    "role": a.role,
                    "model_id": a.model_id,
                    "label": a.label,
                    "confidence": a.confidence,
                    "probabilities": list(a.probabilities),
                }
                for a in pred.answers
            )
        if not rows:
            return
        try:
            with self._session(write=True) as session:
                session.execute(insert(PredictionRow), rows)  # parents first: foreign keys are checked
                session.execute(insert(AnswerRow), answers)
        except IntegrityError as exc:
            raise LogStoreError(f"batch not logged (nothing was written): {exc.orig}") from exc

    def add_feedback(
        self, prediction_id: str, label: str | None = None, rating: int | None = None
    ) -> Feedback:
        """Record a corrected label and/or a rating for ``prediction_id``.

        Raises:
            UnknownPredictionError: no such prediction id.
            LogStoreError: neither a label nor a rating was given.
        """
        if label is None and rating is None:
            raise LogStoreError("feedback needs a corrected label, a rating (1-5), or both")
        with self._session(write=True) as session:
            if session.get(PredictionRow, prediction_id) is None:
                raise UnknownPredictionError(
                    f"unknown prediction id {prediction_id!r}: use an id returned by /v1/predict"
                )
            session.add(
                FeedbackRow(prediction_id=prediction_id, label=label, rating=rating, created_at=utcnow())
            )
        return Feedback(prediction_id, label, rating)

    def clear(self) -> int:
        """Delete every logged prediction, generation, answer and feedback (a benchmark starts empty)."""
        with self._session(write=True) as session:
            count = session.scalar(select(func.count()).select_from(PredictionRow)) or 0
            for table in (FeedbackRow, AnswerRow, PredictionRow):
                session.execute(delete(table))
            self.clear_generations(session)
        return int(count)

    def prediction_head(self, prediction_id: str) -> tuple[str, str]:
        """``(model_id, head)`` of the final answer of ``prediction_id``."""
        with self._session() as session:
            row = session.get(PredictionRow, prediction_id)
            if row is None:
                raise UnknownPredictionError(
                    f"unknown prediction id {prediction_id!r}: use an id returned by /v1/predict"
                )
            return row.model_id, row.head

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the store holds."""
        found: set[str] = set()
        with self._session() as session:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                found.update(session.scalars(select(PredictionRow.id).where(PredictionRow.id.in_(chunk))))
        return found

    def count(self) -> int:
        """How many predictions are logged."""
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(PredictionRow)) or 0)

    def confidences(self, model_id: str, head: str) -> list[float]:
        """Confidences of ``model_id`` on ``head``, one per distinct text (its latest answer)."""
        query = (
            select(PredictionRow.text_hash, AnswerRow.confidence)
            .join(AnswerRow, AnswerRow.prediction_id == PredictionRow.id)
            .where(AnswerRow.model_id == model_id, PredictionRow.head == head)
            .order_by(PredictionRow.created_at, PredictionRow.id)
        )
        with self._session() as session:
            latest = {text_hash: conf for text_hash, conf in session.execute(query)}
        return list(latest.values())

    def predictions(self, heads: Sequence[str] | None = None) -> list[Prediction]:
        """Every logged prediction (optionally of some heads) with its answers, oldest first."""
        query = select(PredictionRow).order_by(PredictionRow.created_at, PredictionRow.id)
        if heads is not None:
            query = query.where(PredictionRow.head.in_(list(heads)))
        with self._session() as session:
            rows = session.scalars(query).all()
            answers: dict[str, list[Answer]] = {}
            for row in session.scalars(select(AnswerRow).order_by(AnswerRow.prediction_id, AnswerRow.role)):
                answers.setdefault(row.prediction_id, []).append(
                    Answer(row.role, row.model_id, row.label, row.confidence, tuple(row.probabilities))
                )
            return [
                Prediction(
                    r.id, r.target, r.head, r.text, r.text_hash, r.privacy, tuple(answers.get(r.id, ()))
                )
                for r in rows
            ]

    def feedback(self) -> list[Feedback]:
        """Every feedback, oldest first."""
        query = select(FeedbackRow).order_by(FeedbackRow.created_at, FeedbackRow.id)
        with self._session() as session:
            return [Feedback(r.prediction_id, r.label, r.rating) for r in session.scalars(query)]
