"""The lineage registry: models (a DAG of parents), datasets, runs and evaluations in SQLAlchemy.

``Registry.open(home)`` opens ``home/registry.db`` (SQLite, safe for several writing processes);
``Registry(url)`` opens any SQLAlchemy URL. :func:`lineage_json` and :func:`lineage_tree` show it.
"""

from fanbu.registry.lineage import lineage_json, lineage_tree
from fanbu.registry.records import (
    MODEL_STATUSES,
    RELATIONS,
    RUN_STATUSES,
    DatasetLink,
    DatasetRecord,
    EvaluationRecord,
    ModelRecord,
    RunRecord,
)
from fanbu.registry.store import Registry

__all__ = [
    "MODEL_STATUSES",
    "RELATIONS",
    "RUN_STATUSES",
    "DatasetLink",
    "DatasetRecord",
    "EvaluationRecord",
    "ModelRecord",
    "Registry",
    "RunRecord",
    "lineage_json",
    "lineage_tree",
]
