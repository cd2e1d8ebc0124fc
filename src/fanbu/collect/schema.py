"""The logging store's tables, in the registry's database but with their own metadata.

``serve_predictions`` holds one row per prediction id the server returned (the final answer);
``serve_answers`` one row per model that answered it (``single``, or ``small`` and ``large`` for a
cascade that escalated); ``serve_feedback`` what users said about a prediction afterwards.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fanbu.registry.schema import UTCDateTime


class LogBase(DeclarativeBase):
    """Declarative base of the logging store (created on open, beside the registry's tables)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, list[Any]: JSON}


def new_prediction_id() -> str:
    """32 hex digits that sort by creation time: 48 bits of Unix milliseconds, then 80 random bits.

    The layout of a UUIDv7. Ids that grow with time make the log's two indexes on them (the
    predictions' id, the answers' key) grow at their end, as ``created_at`` does: with random ids
    every insert lands on a random index page, and a busy server's commits slow down as the log grows.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


class PredictionRow(LogBase):
    """One returned prediction: what was asked, the final label and how it was stored."""

    __tablename__ = "serve_predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    target: Mapped[str] = mapped_column(String(300))  # what the client named: a model ref or a cascade
    model_id: Mapped[str] = mapped_column(String(300), index=True)  # the model whose answer was returned
    head: Mapped[str] = mapped_column(String(255), index=True)  # the head, i.e. the domain
    text: Mapped[str | None] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)
    privacy: Mapped[str] = mapped_column(String(8))
    label: Mapped[str] = mapped_column(String(255))
    confidence: Mapped[float] = mapped_column(Float)
    escalated: Mapped[bool] = mapped_column(Boolean)


class AnswerRow(LogBase):
    """One model's answer to a prediction (both answers are kept when a cascade escalates)."""

    __tablename__ = "serve_answers"

    prediction_id: Mapped[str] = mapped_column(
        ForeignKey("serve_predictions.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)  # single | small | large
    model_id: Mapped[str] = mapped_column(String(300), index=True)
    label: Mapped[str] = mapped_column(String(255))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[list[Any]]


class FeedbackRow(LogBase):
    """A corrected label and/or a rating (1-5) for one prediction."""

    __tablename__ = "serve_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(
        ForeignKey("serve_predictions.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str | None] = mapped_column(String(255))
    rating: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(index=True)
