"""Queries the registry's public calls share; each runs inside the caller's session."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from fanbu.errors import RegistryError
from fanbu.registry.records import ModelRecord, model_record
from fanbu.registry.schema import DatasetRow, ModelDatasetRow, ModelParentRow, ModelRow, RunRow, utcnow

HINT = "run `fanbu lineage` to list registered ids"


def next_version(session: Session, name: str) -> int:
    """0 for a new name, else the highest version + 1."""
    highest = session.scalar(select(func.max(ModelRow.version)).where(ModelRow.name == name))
    return 0 if highest is None else highest + 1


def insert_model(
    session: Session,
    name: str,
    version: int | None,
    parent_ids: tuple[str, ...],
    dataset_ids: tuple[str, ...],
    fields: dict[str, Any],
) -> ModelRecord:
    """Insert a model row with its parent and dataset edges, after checking every id exists."""
    if version is None:
        version = next_version(session, name)
    model_id = f"{name}:v{version}"
    if session.get(ModelRow, model_id) is not None:
        raise RegistryError(
            f"model {model_id} already exists; omit version= to register v{next_version(session, name)}"
        )
    require(session, ModelRow.id, parent_ids, "parent model")
    require(session, DatasetRow.id, dataset_ids, "dataset")
    row = ModelRow(id=model_id, name=name, version=version, created_at=utcnow(), **fields)
    session.add(row)
    session.flush()
    session.add_all(
        ModelParentRow(child_id=model_id, parent_id=p, position=i) for i, p in enumerate(parent_ids)
    )
    session.add_all(ModelDatasetRow(model_id=model_id, dataset_id=d, role="train") for d in dataset_ids)
    session.flush()
    return model_record(row, parent_ids)


def require(session: Session, column: Any, ids: tuple[str, ...], what: str) -> None:
    """Raise naming every id in ``ids`` that ``column`` does not hold."""
    if not ids:
        return
    found = set(session.scalars(select(column).where(column.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise RegistryError(
            f"unknown {what} {', '.join(missing)}: register it first ({HINT}); nothing was written"
        )


def model_row(session: Session, model_id: str) -> ModelRow:
    """The row of ``model_id``; unknown ids raise, listing the known versions of that name."""
    row = session.get(ModelRow, model_id)
    if row is None:
        name = model_id.rsplit(":v", 1)[0]
        known = session.scalars(select(ModelRow.id).where(ModelRow.name == name).order_by(ModelRow.version))
        versions = ", ".join(known)
        also = f" (known versions: {versions})" if versions else ""
        raise RegistryError(f"unknown model {model_id!r}{also}: {HINT}")
    return row


def run_row(session: Session, run_id: str) -> RunRow:
    """The row of ``run_id``, or a RegistryError."""
    row = session.get(RunRow, run_id)
    if row is None:
        raise RegistryError(f"unknown run {run_id!r}: list runs with Registry.list_runs() or `fanbu lineage`")
    return row


def by_creation(query: Select[tuple[ModelRow]]) -> Select[tuple[ModelRow]]:
    """Order models by registration time, then name and version."""
    return query.order_by(ModelRow.created_at, ModelRow.name, ModelRow.version)


def model_records(session: Session, rows: Iterable[ModelRow]) -> list[ModelRecord]:
    """Records for ``rows``, with their parents in the order they were given."""
    items = list(rows)
    parents: dict[str, list[str]] = {row.id: [] for row in items}
    ids = list(parents)
    for start in range(0, len(ids), 500):
        query = select(ModelParentRow).where(ModelParentRow.child_id.in_(ids[start : start + 500]))
        for edge in session.scalars(query.order_by(ModelParentRow.position)):
            parents[edge.child_id].append(edge.parent_id)
    return [model_record(row, tuple(parents[row.id])) for row in items]
