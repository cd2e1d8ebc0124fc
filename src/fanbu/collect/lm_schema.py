"""The logging store's generation tables (language models), beside the prediction tables.

``serve_generations`` holds one row per completion the server returned (the final answer);
``serve_generation_answers`` one row per model that answered it (``single``, or ``small`` and
``large`` for an LM cascade that escalated); ``serve_generation_feedback`` a rating and/or a corrected
completion a user sent afterwards. Prompts, completions and corrections are stored under the server's
privacy mode (the text, only its hash, or the masked text).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fanbu.collect.schema import LogBase


class GenerationRow(LogBase):
    """One returned completion: the prompt, the final completion and how they were stored."""

    __tablename__ = "serve_generations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    target: Mapped[str] = mapped_column(String(300))  # what the client named: a model ref or an LM cascade
    model_id: Mapped[str] = mapped_column(String(300), index=True)  # the model whose completion was returned
    endpoint: Mapped[str] = mapped_column(String(16))  # generate | completions | chat
    prompt: Mapped[str | None] = mapped_column(Text)  # as the model saw it (chat: the rendered template)
    prompt_hash: Mapped[str] = mapped_column(String(64), index=True)
    completion: Mapped[str | None] = mapped_column(Text)
    completion_hash: Mapped[str] = mapped_column(String(64))
    privacy: Mapped[str] = mapped_column(String(8))
    mean_logprob: Mapped[float] = mapped_column(Float)
    escalated: Mapped[bool] = mapped_column(Boolean)


class GenerationAnswerRow(LogBase):
    """One model's completion of a prompt (both are kept when an LM cascade escalates)."""

    __tablename__ = "serve_generation_answers"

    generation_id: Mapped[str] = mapped_column(
        ForeignKey("serve_generations.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)  # single | small | large
    model_id: Mapped[str] = mapped_column(String(300), index=True)
    completion: Mapped[str | None] = mapped_column(Text)
    completion_hash: Mapped[str] = mapped_column(String(64))
    mean_logprob: Mapped[float] = mapped_column(Float)  # mean log-probability of the generated tokens
    tokens: Mapped[int] = mapped_column(Integer)
    finish_reason: Mapped[str] = mapped_column(String(16))  # stop | length


class GenerationFeedbackRow(LogBase):
    """A rating (1-5) and/or a corrected completion for one generation."""

    __tablename__ = "serve_generation_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(
        ForeignKey("serve_generations.id", ondelete="CASCADE"), index=True
    )
    rating: Mapped[int | None] = mapped_column(Integer)
    completion: Mapped[str | None] = mapped_column(Text)  # the corrected completion, stored like prompts
    created_at: Mapped[datetime] = mapped_column(index=True)
