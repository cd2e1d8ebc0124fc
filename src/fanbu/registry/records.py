"""Plain, frozen records the registry returns (never live ORM objects), and their JSON form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fanbu.registry.schema import DatasetRow, EvaluationRow, ModelRow, RunRow

MODEL_STATUSES: tuple[str, ...] = ("candidate", "champion", "rejected", "archived")
RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed")
# base_model_relation of a model to its parents (Hugging Face's four, plus fanbu's derivations).
RELATIONS: tuple[str, ...] = (
    "finetune",
    "adapter",
    "quantized",
    "merge",
    "distilled",
    "pruned",
    "moe",
    "multitask",
    "continual",
    "federated",
    "pretrained",
)


@dataclass(frozen=True)
class ModelRecord:
    """A registered model version and where it came from."""

    id: str
    name: str
    version: int
    kind: str
    path: str
    status: str
    reason: str | None
    relation: str | None
    parents: tuple[str, ...]
    recipe: dict[str, Any]
    fingerprints: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset identified by its content fingerprint."""

    id: str
    name: str
    fingerprint: str
    n_rows: int
    domain: str | None
    split: str | None
    source: str | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RunRecord:
    """One run of a fanbu command."""

    id: str
    kind: str
    status: str
    recipe: dict[str, Any]
    out_dir: str | None
    summary: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class EvaluationRecord:
    """One metric value of one model on one domain split."""

    id: int
    model_id: str
    domain: str
    split: str
    metric: str
    value: float
    dataset_fingerprint: str | None
    run_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class DatasetLink:
    """An edge model -> dataset and the dataset's role for that model (e.g. ``train``)."""

    model: str
    dataset: str
    role: str


def model_record(row: ModelRow, parents: tuple[str, ...]) -> ModelRecord:
    """Copy a model row (and its ordered parent ids) into a record."""
    return ModelRecord(
        id=row.id,
        name=row.name,
        version=row.version,
        kind=row.kind,
        path=row.path,
        status=row.status,
        reason=row.reason,
        relation=row.relation,
        parents=parents,
        recipe=dict(row.recipe or {}),
        fingerprints=dict(row.fingerprints or {}),
        metadata=dict(row.meta or {}),
        created_at=row.created_at,
    )


def dataset_record(row: DatasetRow) -> DatasetRecord:
    """Copy a dataset row into a record."""
    return DatasetRecord(
        id=row.id,
        name=row.name,
        fingerprint=row.fingerprint,
        n_rows=row.n_rows,
        domain=row.domain,
        split=row.split,
        source=row.source,
        metadata=dict(row.meta or {}),
        created_at=row.created_at,
    )


def run_record(row: RunRow) -> RunRecord:
    """Copy a run row into a record."""
    return RunRecord(
        id=row.id,
        kind=row.kind,
        status=row.status,
        recipe=dict(row.recipe or {}),
        out_dir=row.out_dir,
        summary=dict(row.summary or {}),
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def evaluation_record(row: EvaluationRow) -> EvaluationRecord:
    """Copy an evaluation row into a record."""
    return EvaluationRecord(
        id=row.id,
        model_id=row.model_id,
        domain=row.domain,
        split=row.split,
        metric=row.metric,
        value=row.value,
        dataset_fingerprint=row.dataset_fingerprint,
        run_id=row.run_id,
        created_at=row.created_at,
    )


def to_json_dict(record: Any) -> dict[str, Any]:
    """A record as a ``json.dumps``-able dict: datetimes become ISO strings, tuples lists."""
    return {field.name: _jsonable(getattr(record, field.name)) for field in dataclasses.fields(record)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
