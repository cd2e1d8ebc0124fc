"""Fixtures: a fresh registry in a temporary home, and a small model DAG with a merge."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fanbu.registry import DatasetRecord, ModelRecord, Registry


@dataclass(frozen=True)
class Dag:
    """base -> (student distilled, pruned) -> merged (two parents) -> tuned."""

    base: ModelRecord
    student: ModelRecord
    pruned: ModelRecord
    merged: ModelRecord
    tuned: ModelRecord
    data: DatasetRecord


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


@pytest.fixture
def dag(registry: Registry) -> Dag:
    data = registry.register_dataset(
        name="comp-train", fingerprint="ab" * 32, n_rows=120, domain="comp", split="train"
    )
    base = registry.register_model(name="teacher", path="/m/teacher", kind="causal_lm", status="champion")
    student = registry.register_model(
        name="comp-student",
        path="/m/student",
        kind="encoder",
        parents=[base.id],
        relation="distilled",
        datasets=[data.id],
        fingerprints={"comp": data.fingerprint},
        recipe={"derive": {"method": "distill", "epochs": 2}},
    )
    pruned = registry.register_model(
        name="comp-pruned", path="/m/pruned", kind="encoder", parents=[base.id], relation="pruned"
    )
    merged = registry.register_model(
        name="comp-merged",
        path="/m/merged",
        kind="encoder",
        parents=[student.id, pruned.id],
        relation="merge",
        metadata={"method": "ties"},
    )
    tuned = registry.register_model(
        name="comp-merged", path="/m/merged1", kind="encoder", parents=[merged.id], relation="finetune"
    )
    return Dag(base, student, pruned, merged, tuned, data)
