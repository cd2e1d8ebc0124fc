"""The registry's tables, in one place (SQLAlchemy 2 typed declarative).

Models form a DAG through ``model_parents`` (a new model's parents must already exist, so no cycle
can be written). Models link to the datasets they were trained on through ``model_datasets``.
Timestamps are stored as naive UTC and read back as aware UTC on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as aware UTC (SQLite keeps no time zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base: ``dict`` columns are JSON, ``datetime`` columns are UTC timestamps."""

    # SQLAlchemy reads this class attribute once, at mapping time; it is never mutated
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}  # noqa: RUF012


class ModelRow(Base):
    """One registered model version; ``id`` is ``name:v{version}``."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    relation: Mapped[str | None] = mapped_column(String(32))
    recipe: Mapped[dict[str, Any]]
    fingerprints: Mapped[dict[str, Any]]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(index=True)


class ModelParentRow(Base):
    """An edge parent -> child; ``position`` keeps the parents in the order they were given."""

    __tablename__ = "model_parents"

    child_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("models.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)


class DatasetRow(Base):
    """A dataset, identified by its content fingerprint; ``id`` is ``name@fingerprint[:12]``."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "fingerprint", name="uq_datasets_name_fingerprint"),)

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(255), index=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    domain: Mapped[str | None] = mapped_column(String(255))
    split: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime]


class ModelDatasetRow(Base):
    """An edge model -> dataset with the dataset's role for the model (e.g. ``train``)."""

    __tablename__ = "model_datasets"

    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(64), primary_key=True)


class RunRow(Base):
    """One run of a fanbu command (derive, feed back, evaluate...)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    recipe: Mapped[dict[str, Any]]
    out_dir: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any]]
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]


class EvaluationRow(Base):
    """One metric of one model on one domain split."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    domain: Mapped[str] = mapped_column(String(255), index=True)
    split: Mapped[str] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime]
