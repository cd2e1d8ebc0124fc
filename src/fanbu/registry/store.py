"""The lineage registry: every model, dataset, run and evaluation fanbu makes, in one database.

One session per public call: it commits or rolls back as a whole, so a failed call leaves nothing
half-written. Public methods return frozen records (:mod:`fanbu.registry.records`), never ORM objects.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fanbu.errors import RegistryError
from fanbu.io import safe_child
from fanbu.registry import queries
from fanbu.registry.checks import (
    check_choice,
    check_dataset_name,
    check_metric,
    check_model_name,
    check_optional_text,
    check_text,
    check_unique,
    jsonify,
)
from fanbu.registry.engine import describe_url
from fanbu.registry.records import (
    MODEL_STATUSES,
    RELATIONS,
    RUN_STATUSES,
    DatasetLink,
    DatasetRecord,
    EvaluationRecord,
    ModelRecord,
    RunRecord,
    dataset_record,
    evaluation_record,
    run_record,
)
from fanbu.registry.schema import (
    Base,
    DatasetRow,
    EvaluationRow,
    ModelDatasetRow,
    ModelParentRow,
    ModelRow,
    RunRow,
    utcnow,
)
from fanbu.registry.sqlstore import SqlStore

_VERSION_RETRIES = 5  # auto-numbered versions retry when another writer took the same number


class Registry(SqlStore):
    """The lineage store: models (a DAG through their parents), datasets, runs and evaluations.

    Args:
        url: Any SQLAlchemy URL; SQLite files are set up for several writing processes.
        home: The directory artefacts live under (``home/models/<name>/v<version>``), if any.
    """

    error = RegistryError
    open_message = (
        "cannot open registry {url}: {reason} "
        "(check that its directory exists and is writable, or use Registry.open(home))"
    )
    busy_message = (
        "registry {url}: {reason} (if it is locked, another process held the write lock too long; retry)"
    )

    def __init__(self, url: str, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else None
        super().__init__(url, Base.metadata)

    @classmethod
    def open(cls, home: str | Path, url: str | None = None) -> Registry:
        """Open (creating if needed) the registry of ``home``: ``home/registry.db`` unless ``url``.

        A home created here is owner-only (0700), and so is a new SQLite file in it (0600, see
        :func:`fanbu.registry.engine.open_engines`); an existing directory keeps its mode.
        """
        root = Path(home).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise RegistryError(
                f"registry home {root} is a file; pass a directory (it is created if missing)"
            )
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(url or f"sqlite:///{root}/registry.db", home=root)

    def __repr__(self) -> str:
        return f"Registry({describe_url(self.url)!r}, home={self.home!r})"

    # ----------------------------------------------------------------------------------- models

    def model_dir(self, name: str, version: int) -> Path:
        """Where the artefacts of ``name`` version ``version`` belong: ``home/models/<name>/v<version>``."""
        if self.home is None:
            raise RegistryError("this registry has no home directory: open it with Registry.open(home)")
        check_model_name(name)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise RegistryError(f"version must be a non-negative int, got {version!r}")
        return safe_child(
            self.home / "models", name, f"v{version}", what="model name", nested=True, error=RegistryError
        )

    def next_version(self, name: str) -> int:
        """The version a new model called ``name`` gets: 0 for a new name, then highest + 1."""
        with self._session() as session:
            return queries.next_version(session, name)

    def register_model(
        self,
        *,
        name: str,
        path: str | Path,
        kind: str,
        parents: Sequence[str] = (),
        relation: str | None = None,
        recipe: dict[str, Any] | None = None,
        fingerprints: dict[str, Any] | None = None,
        datasets: Sequence[str] = (),
        status: str = "candidate",
        metadata: dict[str, Any] | None = None,
        version: int | None = None,
    ) -> ModelRecord:
        """Register a model version, its parent edges and its training datasets, all or nothing.

        Raises:
            RegistryError: an unknown parent or dataset, an existing ``name:v{version}``, or a bad
                name, status or relation; nothing is written.
        """
        check_model_name(name)
        check_text(kind, "kind")
        check_choice(status, MODEL_STATUSES, "model status")
        parent_ids = check_unique(parents, "parents")
        dataset_ids = check_unique(datasets, "datasets")
        if relation is not None:
            check_choice(relation, RELATIONS, "relation")
            if not parent_ids:
                raise RegistryError(f"relation {relation!r} needs parents: pass parents=[...] or drop it")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise RegistryError(f"version must be a non-negative int, got {version!r} (or omit it)")
        fields: dict[str, Any] = {
            "kind": kind,
            "path": str(path),
            "status": status,
            "reason": None,
            "relation": relation,
            "recipe": jsonify(recipe, "recipe"),
            "fingerprints": jsonify(fingerprints, "fingerprints"),
            "meta": jsonify(metadata, "metadata"),
        }
        attempt = 0
        while True:
            try:
                with self._session(write=True) as session:
                    return queries.insert_model(session, name, version, parent_ids, dataset_ids, fields)
            except IntegrityError as exc:  # another writer committed the same name:v{version} first
                attempt += 1
                if version is not None or attempt >= _VERSION_RETRIES:
                    raise RegistryError(
                        f"cannot register model {name!r}: {exc.orig} (another process registered the "
                        "same version; omit version= to take the next free one)"
                    ) from exc

    def get_model(self, model_id: str) -> ModelRecord:
        """The model ``model_id`` (``name:v{version}``)."""
        with self._session() as session:
            return queries.model_records(session, [queries.model_row(session, model_id)])[0]

    def latest(self, name: str, status: str | None = None) -> ModelRecord | None:
        """The highest version of ``name`` (with ``status``, if given), or ``None``."""
        query = select(ModelRow).where(ModelRow.name == name)
        if status is not None:
            query = query.where(ModelRow.status == check_choice(status, MODEL_STATUSES, "model status"))
        with self._session() as session:
            row = session.scalars(query.order_by(ModelRow.version.desc()).limit(1)).first()
            return None if row is None else queries.model_records(session, [row])[0]

    def list_models(self, name: str | None = None, status: str | None = None) -> list[ModelRecord]:
        """Models in registration order, optionally of one name and/or status."""
        query = select(ModelRow)
        if name is not None:
            query = query.where(ModelRow.name == name)
        if status is not None:
            query = query.where(ModelRow.status == check_choice(status, MODEL_STATUSES, "model status"))
        with self._session() as session:
            return queries.model_records(session, session.scalars(queries.by_creation(query)).all())

    def children(self, model_id: str) -> list[ModelRecord]:
        """Models that list ``model_id`` among their parents, in registration order."""
        with self._session() as session:
            queries.model_row(session, model_id)
            query = select(ModelRow).join(ModelParentRow, ModelParentRow.child_id == ModelRow.id)
            rows = session.scalars(
                queries.by_creation(query.where(ModelParentRow.parent_id == model_id))
            ).all()
            return queries.model_records(session, rows)

    def ancestors(self, model_id: str) -> list[ModelRecord]:
        """Every transitive parent of ``model_id``, nearest first (breadth-first), each once."""
        with self._session() as session:
            queries.model_row(session, model_id)
            parents: dict[str, list[str]] = {}
            edges = select(ModelParentRow).order_by(ModelParentRow.child_id, ModelParentRow.position)
            for edge in session.scalars(edges):
                parents.setdefault(edge.child_id, []).append(edge.parent_id)
            order: list[str] = []
            queue = deque(parents.get(model_id, []))
            while queue:
                current = queue.popleft()
                if current in order:
                    continue
                order.append(current)
                queue.extend(parents.get(current, []))
            rows = {row.id: row for row in session.scalars(select(ModelRow).where(ModelRow.id.in_(order)))}
            return queries.model_records(session, [rows[i] for i in order])

    def set_status(self, model_id: str, status: str, reason: str | None = None) -> ModelRecord:
        """Set a model's status (and the reason for it, replacing any earlier one)."""
        check_choice(status, MODEL_STATUSES, "model status")
        with self._session(write=True) as session:
            row = queries.model_row(session, model_id)
            row.status, row.reason = status, reason
            return queries.model_records(session, [row])[0]

    def set_statuses(
        self,
        changes: Sequence[tuple[str, str, str | None]],
        *,
        expected: Mapping[str, str] | None = None,
    ) -> list[ModelRecord]:
        """Apply ``(model id, status, reason)`` changes in one transaction: all of them or none.

        Args:
            changes: The new status and reason of each model.
            expected: Model id -> the status it must have now; a model found in another status (changed
                meanwhile by another process) makes the whole call fail with nothing written.
        """
        for _, status, _ in changes:
            check_choice(status, MODEL_STATUSES, "model status")
        check_unique([model_id for model_id, _, _ in changes], "models")
        expected = expected or {}
        with self._session(write=True) as session:
            rows = []
            for model_id, status, reason in changes:
                row = queries.model_row(session, model_id)
                if model_id in expected and row.status != expected[model_id]:
                    raise RegistryError(
                        f"{model_id} is {row.status!r}, expected {expected[model_id]!r} (changed meanwhile?); "
                        "nothing was written, re-read the registry and try again"
                    )
                row.status, row.reason = status, reason
                rows.append(row)
            session.flush()
            return queries.model_records(session, rows)

    # --------------------------------------------------------------------------------- datasets

    def register_dataset(
        self,
        *,
        name: str,
        fingerprint: str,
        n_rows: int,
        domain: str | None = None,
        split: str | None = None,
        source: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DatasetRecord:
        """Register a dataset; the same name and fingerprint again returns the existing record."""
        check_dataset_name(name)
        check_text(fingerprint, "dataset fingerprint")
        check_optional_text(domain, "dataset domain")
        check_optional_text(split, "dataset split")
        if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
            raise RegistryError(f"dataset {name!r}: n_rows must be a non-negative int, got {n_rows!r}")
        meta = jsonify(metadata, "metadata")
        same = select(DatasetRow).where(DatasetRow.name == name, DatasetRow.fingerprint == fingerprint)
        try:
            with self._session(write=True) as session:
                existing = session.scalars(same).first()
                if existing is not None:
                    return dataset_record(existing)
                row = DatasetRow(
                    id=f"{name}@{fingerprint[:12]}",
                    name=name,
                    fingerprint=fingerprint,
                    n_rows=n_rows,
                    domain=domain,
                    split=split,
                    source=source,
                    meta=meta,
                    created_at=utcnow(),
                )
                session.add(row)
                session.flush()
                return dataset_record(row)
        except IntegrityError as exc:  # another writer registered it between our read and insert
            with self._session() as session:
                existing = session.scalars(same).first()
            if existing is None:
                raise RegistryError(f"cannot register dataset {name!r}: {exc.orig}") from exc
            return dataset_record(existing)

    def get_dataset(self, dataset_id: str) -> DatasetRecord:
        """The dataset ``dataset_id`` (``name@fingerprint[:12]``)."""
        with self._session() as session:
            row = session.get(DatasetRow, dataset_id)
            if row is None:
                raise RegistryError(f"unknown dataset {dataset_id!r}: {queries.HINT}")
            return dataset_record(row)

    def list_datasets(self) -> list[DatasetRecord]:
        """Every dataset, in registration order."""
        with self._session() as session:
            rows = session.scalars(select(DatasetRow).order_by(DatasetRow.created_at, DatasetRow.id))
            return [dataset_record(row) for row in rows]

    def model_datasets(self, model_id: str) -> list[DatasetRecord]:
        """The datasets ``model_id`` was registered with, by name."""
        with self._session() as session:
            queries.model_row(session, model_id)
            query = (
                select(DatasetRow)
                .join(ModelDatasetRow, ModelDatasetRow.dataset_id == DatasetRow.id)
                .where(ModelDatasetRow.model_id == model_id)
                .order_by(DatasetRow.name, DatasetRow.id)
            )
            return [dataset_record(row) for row in session.scalars(query).unique()]

    def dataset_links(self) -> list[DatasetLink]:
        """Every model -> dataset edge with its role."""
        with self._session() as session:
            query = select(ModelDatasetRow).order_by(ModelDatasetRow.model_id, ModelDatasetRow.dataset_id)
            return [DatasetLink(r.model_id, r.dataset_id, r.role) for r in session.scalars(query)]

    # ------------------------------------------------------------------------------------- runs

    def start_run(
        self, kind: str, recipe: dict[str, Any] | None = None, out_dir: str | None = None
    ) -> RunRecord:
        """Record that a run of ``kind`` started; finish it with :meth:`finish_run`."""
        row = RunRow(
            id=uuid.uuid4().hex[:12],
            kind=check_text(kind, "run kind"),
            status="running",
            recipe=jsonify(recipe, "recipe"),
            out_dir=None if out_dir is None else str(out_dir),
            summary={},
            started_at=utcnow(),
            finished_at=None,
        )
        with self._session(write=True) as session:
            session.add(row)
            session.flush()
            return run_record(row)

    def finish_run(
        self, run_id: str, status: str = "succeeded", summary: dict[str, Any] | None = None
    ) -> RunRecord:
        """Mark a running run ``succeeded`` or ``failed``, with its summary."""
        check_choice(status, RUN_STATUSES[1:], "final run status")
        data = jsonify(summary, "summary")
        with self._session(write=True) as session:
            row = queries.run_row(session, run_id)
            if row.status != "running":
                raise RegistryError(f"run {run_id} already finished ({row.status}); start a new run")
            row.status, row.summary, row.finished_at = status, data, utcnow()
            return run_record(row)

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``."""
        with self._session() as session:
            return run_record(queries.run_row(session, run_id))

    def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        with self._session() as session:
            return [
                run_record(r) for r in session.scalars(select(RunRow).order_by(RunRow.started_at, RunRow.id))
            ]

    # ------------------------------------------------------------------------------ evaluations

    def record_evaluation(
        self,
        model_id: str,
        *,
        domain: str,
        split: str,
        metrics: Mapping[str, float],
        dataset_fingerprint: str | None = None,
        run_id: str | None = None,
    ) -> list[EvaluationRecord]:
        """Record ``metrics`` of ``model_id`` on ``domain``/``split``: one row per metric, one transaction."""
        check_text(domain, "domain")
        check_text(split, "split")
        check_optional_text(dataset_fingerprint, "dataset_fingerprint")
        if not isinstance(metrics, Mapping) or not metrics:
            raise RegistryError(f"metrics must be a non-empty dict of name -> value, got {metrics!r}")
        values = {name: check_metric(name, value) for name, value in metrics.items()}
        now = utcnow()
        with self._session(write=True) as session:
            queries.model_row(session, model_id)
            if run_id is not None:
                queries.run_row(session, run_id)
            rows = [
                EvaluationRow(
                    model_id=model_id,
                    domain=domain,
                    split=split,
                    metric=name,
                    value=value,
                    dataset_fingerprint=dataset_fingerprint,
                    run_id=run_id,
                    created_at=now,
                )
                for name, value in values.items()
            ]
            session.add_all(rows)
            session.flush()
            return [evaluation_record(row) for row in rows]

    def evaluations(self, model_id: str | None = None, domain: str | None = None) -> list[EvaluationRecord]:
        """Evaluations, oldest first, optionally of one model and/or domain."""
        query = select(EvaluationRow)
        if model_id is not None:
            query = query.where(EvaluationRow.model_id == model_id)
        if domain is not None:
            query = query.where(EvaluationRow.domain == domain)
        with self._session() as session:
            rows = session.scalars(query.order_by(EvaluationRow.created_at, EvaluationRow.id))
            return [evaluation_record(row) for row in rows]
