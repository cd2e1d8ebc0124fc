"""Generations in the logging store: what a served language model was asked and what it answered.

:class:`GenerationLog` adds the generation methods to :class:`~fanbu.collect.store.LogStore` (same
database, same transactions): a generation and all its answers are written in one transaction before
the client gets the completion (or the end of its stream), as predictions are.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fanbu.collect.lm_schema import GenerationAnswerRow, GenerationFeedbackRow, GenerationRow
from fanbu.errors import FanbuError
from fanbu.registry.schema import utcnow

ROLES = ("single", "small", "large")
ENDPOINTS = ("generate", "completions", "chat")


@dataclass(frozen=True)
class Completion:
    """One model's completion as stored: text (or ``None`` under ``hash``), hash, mean log-probability."""

    role: str
    model_id: str
    text: str | None
    text_hash: str
    mean_logprob: float
    tokens: int
    finish_reason: str


A = TypeVar("A")


class Answered(Generic[A]):
    """A logged request and the answers of its roles (``single``, or a cascade's ``small`` and ``large``)."""

    answers: tuple[A, ...]

    @property
    def final(self) -> A:
        """The answer the client received: the ``large`` one when escalated."""
        by_role = {a.role: a for a in self.answers}  # type: ignore[attr-defined]
        return by_role.get("large") or by_role.get("single") or by_role["small"]

    @property
    def escalated(self) -> bool:
        """Whether a cascade passed the request on to its large model."""
        return any(a.role == "large" for a in self.answers)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Generation(Answered[Completion]):
    """A logged generation with its completions (final = the ``large`` one when escalated)."""

    id: str
    target: str
    endpoint: str
    prompt: str | None
    prompt_hash: str
    privacy: str
    answers: tuple[Completion, ...]


@dataclass(frozen=True)
class GenerationFeedback:
    """What a user said about a generation: a rating (1-5) and/or a corrected completion."""

    generation_id: str
    rating: int | None
    completion: str | None


class GenerationLog:
    """The generation half of the logging store (mixed into ``LogStore``, which supplies ``_session``)."""

    error: type[FanbuError]
    _session: Any  # (write: bool = False) -> AbstractContextManager[Session], from SqlStore

    def _tx(self, write: bool = False) -> AbstractContextManager[Session]:
        return self._session(write=write)  # type: ignore[no-any-return]

    def log_generation(self, generation: Generation) -> None:
        """Write ``generation`` and all its completions in one transaction (all or nothing)."""
        if not generation.answers or any(a.role not in ROLES for a in generation.answers):
            raise self.error(f"generation {generation.id}: completions need roles from {ROLES}")
        if generation.endpoint not in ENDPOINTS:
            raise self.error(f"generation {generation.id}: endpoint must be one of {ENDPOINTS}")
        final = generation.final
        row = {
            "id": generation.id,
            "created_at": utcnow(),
            "target": generation.target,
            "model_id": final.model_id,
            "endpoint": generation.endpoint,
            "prompt": generation.prompt,
            "prompt_hash": generation.prompt_hash,
            "completion": final.text,
            "completion_hash": final.text_hash,
            "privacy": generation.privacy,
            "mean_logprob": final.mean_logprob,
            "escalated": generation.escalated,
        }
        answers = [
            {
                "generation_id": generation.id,
                "role": a.role,
                "model_id": a.model_id,
                "completion": a.text,
                "completion_hash": a.text_hash,
                "mean_logprob": a.mean_logprob,
                "tokens": a.tokens,
                "finish_reason": a.finish_reason,
            }
            for a in generation.answers
        ]
        try:
            with self._tx(write=True) as session:
                session.execute(insert(GenerationRow), [row])  # parent first: foreign keys are checked
                session.execute(insert(GenerationAnswerRow), answers)
        except IntegrityError as exc:
            raise self.error(f"generation not logged (nothing was written): {exc.orig}") from exc

    def has_generation(self, generation_id: str) -> bool:
        """Whether the store holds a generation with this id."""
        with self._tx() as session:
            return session.get(GenerationRow, generation_id) is not None

    def add_generation_feedback(
        self, generation_id: str, rating: int | None = None, completion: str | None = None
    ) -> GenerationFeedback:
        """Record a rating and/or a corrected completion (already in its stored form) for a generation."""
        if rating is None and completion is None:
            raise self.error("generation feedback needs a rating (1-5), a corrected completion, or both")
        with self._tx(write=True) as session:
            if session.get(GenerationRow, generation_id) is None:
                raise self.error(f"unknown generation id {generation_id!r}: use an id a completion returned")
            session.add(
                GenerationFeedbackRow(
                    generation_id=generation_id, rating=rating, completion=completion, created_at=utcnow()
                )
            )
        return GenerationFeedback(generation_id, rating, completion)

    def mean_logprobs(self, model_id: str) -> list[float]:
        """Mean token log-probabilities of ``model_id``'s completions, one per distinct prompt (latest)."""
        query = (
            select(GenerationRow.prompt_hash, GenerationAnswerRow.mean_logprob)
            .join(GenerationAnswerRow, GenerationAnswerRow.generation_id == GenerationRow.id)
            .where(GenerationAnswerRow.model_id == model_id)
            .order_by(GenerationRow.created_at, GenerationRow.id)
        )
        with self._tx() as session:
            latest = {prompt_hash: value for prompt_hash, value in session.execute(query)}
        return list(latest.values())

    def generations(self, targets: Sequence[str] | None = None) -> list[Generation]:
        """Every logged generation (optionally of some targets) with its completions, oldest first."""
        query = select(GenerationRow).order_by(GenerationRow.created_at, GenerationRow.id)
        if targets is not None:
            query = query.where(GenerationRow.target.in_(list(targets)))
        with self._tx() as session:
            rows = session.scalars(query).all()
            answers: dict[str, list[Completion]] = {}
            ordered = select(GenerationAnswerRow).order_by(
                GenerationAnswerRow.generation_id, GenerationAnswerRow.role
            )
            for a in session.scalars(ordered):
                answers.setdefault(a.generation_id, []).append(
                    Completion(
                        a.role,
                        a.model_id,
                        a.completion,
                        a.completion_hash,
                        a.mean_logprob,
                        a.tokens,
                        a.finish_reason,
                    )
                )
            return [
                Generation(
                    r.id,
                    r.target,
                    r.endpoint,
                    r.prompt,
                    r.prompt_hash,
                    r.privacy,
                    tuple(answers.get(r.id, ())),
                )
                for r in rows
            ]

    def generation_feedback(self) -> list[GenerationFeedback]:
        """Every generation feedback, oldest first."""
        query = select(GenerationFeedbackRow).order_by(
            GenerationFeedbackRow.created_at, GenerationFeedbackRow.id
        )
        with self._tx() as session:
            return [
                GenerationFeedback(r.generation_id, r.rating, r.completion) for r in session.scalars(query)
            ]

    def clear_generations(self, session: Session) -> None:
        """Delete every generation, completion and feedback inside ``session`` (``LogStore.clear``)."""
        for table in (GenerationFeedbackRow, GenerationAnswerRow, GenerationRow):
            session.execute(delete(table))
