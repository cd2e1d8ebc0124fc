"""Models: the DAG, versions, status, and what a bad call leaves behind (nothing)."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from pydantic import BaseModel

from fanbu.errors import RegistryError
from fanbu.registry import MODEL_STATUSES, RELATIONS, Registry

if TYPE_CHECKING:
    from conftest import Dag


def test_dag_ids_versions_and_parents(registry: Registry, dag: Dag) -> None:
    assert dag.base.id == "teacher:v0" and dag.base.parents == ()
    assert dag.merged.id == "comp-merged:v0"
    assert dag.merged.parents == ("comp-student:v0", "comp-pruned:v0")
    assert dag.tuned.id == "comp-merged:v1" and dag.tuned.version == 1
    assert registry.next_version("comp-merged") == 2
    assert registry.next_version("never-seen") == 0
    got = registry.get_model("comp-student:v0")
    assert got == dag.student
    assert got.recipe == {"derive": {"method": "distill", "epochs": 2}}
    assert got.fingerprints == {"comp": "ab" * 32}
    assert registry.get_model("comp-merged:v0").metadata == {"method": "ties"}


def test_children_and_ancestors(registry: Registry, dag: Dag) -> None:
    assert [m.id for m in registry.children(dag.base.id)] == ["comp-student:v0", "comp-pruned:v0"]
    assert [m.id for m in registry.children(dag.pruned.id)] == ["comp-merged:v0"]
    assert registry.children(dag.tuned.id) == []
    # diamond: teacher is reached through both parents but listed once, after the nearer ones
    assert [m.id for m in registry.ancestors(dag.tuned.id)] == [
        "comp-merged:v0",
        "comp-student:v0",
        "comp-pruned:v0",
        "teacher:v0",
    ]
    assert registry.ancestors(dag.base.id) == []


def test_records_are_frozen_and_utc(dag: Dag) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        dag.base.status = "archived"  # type: ignore[misc]
    assert dag.base.created_at.tzinfo is not None
    assert dag.base.created_at.utcoffset() == UTC.utcoffset(None)


def test_status_and_latest(registry: Registry, dag: Dag) -> None:
    assert registry.latest("comp-merged") == dag.tuned
    assert registry.latest("comp-merged", status="champion") is None
    updated = registry.set_status(dag.merged.id, "champion", reason="beats teacher on comp")
    assert (updated.status, updated.reason) == ("champion", "beats teacher on comp")
    assert registry.get_model(dag.merged.id).status == "champion"
    assert registry.latest("comp-merged", status="champion").id == dag.merged.id
    assert registry.latest("nobody") is None
    assert [m.id for m in registry.list_models(status="champion")] == ["teacher:v0", "comp-merged:v0"]
    assert [m.id for m in registry.list_models(name="comp-merged")] == ["comp-merged:v0", "comp-merged:v1"]
    assert len(registry.list_models()) == 5


def test_unknown_parent_writes_nothing(registry: Registry, dag: Dag) -> None:
    before = registry.list_models()
    with pytest.raises(RegistryError, match=r"unknown parent model ghost:v3: register it first") as err:
        registry.register_model(
            name="orphan", path="/m/o", kind="encoder", parents=[dag.base.id, "ghost:v3"], relation="merge"
        )
    assert "fanbu lineage" in str(err.value) and "nothing was written" in str(err.value)
    assert registry.list_models() == before
    assert registry.next_version("orphan") == 0
    assert registry.children(dag.base.id) == [dag.student, dag.pruned]


def test_unknown_dataset_writes_nothing(registry: Registry, dag: Dag) -> None:
    with pytest.raises(RegistryError, match=r"unknown dataset nope@123: register it first"):
        registry.register_model(name="x", path="/m/x", kind="encoder", datasets=[dag.data.id, "nope@123"])
    assert registry.list_models(name="x") == []


def test_no_cycle_can_be_written(registry: Registry, dag: Dag) -> None:
    # a model cannot name itself (or a later version of itself) as parent: parents must exist first
    with pytest.raises(RegistryError, match=r"unknown parent model loop:v0"):
        registry.register_model(name="loop", path="/m/l", kind="encoder", version=0, parents=["loop:v0"])
    # an existing model cannot be re-registered to hang it under its own descendant
    with pytest.raises(RegistryError, match=r"model teacher:v0 already exists; omit version= to register v1"):
        registry.register_model(
            name="teacher", version=0, path="/m/t", kind="causal_lm", parents=[dag.tuned.id]
        )
    for model in registry.list_models():
        assert model.id not in {a.id for a in registry.ancestors(model.id)}
    assert registry.get_model(dag.base.id).parents == ()


def test_explicit_version(registry: Registry) -> None:
    rec = registry.register_model(name="imported", path="/m/i", kind="module", version=7)
    assert rec.id == "imported:v7"
    assert registry.next_version("imported") == 8


def test_get_model_unknown_hints(registry: Registry, dag: Dag) -> None:
    with pytest.raises(
        RegistryError,
        match=r"unknown model 'comp-merged:v9' \(known versions: "
        r"comp-merged:v0, comp-merged:v1\): run `fanbu lineage`",
    ):
        registry.get_model("comp-merged:v9")
    with pytest.raises(RegistryError, match=r"unknown model 'zzz:v0': run `fanbu lineage` to list"):
        registry.children("zzz:v0")
    with pytest.raises(RegistryError, match=r"unknown model 'zzz:v0'"):
        registry.ancestors("zzz:v0")
    with pytest.raises(RegistryError, match=r"unknown model 'zzz:v0'"):
        registry.set_status("zzz:v0", "archived")


class _Recipe(BaseModel):
    lr: float = 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "great"}, "unknown model status 'great': use one of " + ", ".join(MODEL_STATUSES)),
        (
            {"parents": ["teacher:v0"], "relation": "cloned"},
            "unknown relation 'cloned': use one of " + ", ".join(RELATIONS),
        ),
        ({"relation": "finetune"}, "relation 'finetune' needs parents: pass parents=[...] or drop it"),
        ({"name": "bad:name"}, "invalid model name 'bad:name': use letters, digits"),
        ({"name": "../up"}, "invalid model name '../up'"),
        ({"kind": " "}, "kind must be a non-empty string"),
        ({"kind": "k" * 201}, "kind is 201 characters long; keep it to 200"),
        ({"name": "n" * 201}, "at most 200 characters"),
        ({"version": -1}, "version must be a non-negative int, got -1"),
        ({"parents": "teacher:v0"}, "parents must be a list of ids, not the string 'teacher:v0'"),
        ({"parents": ["teacher:v0", "teacher:v0"]}, "parents: 'teacher:v0' is listed twice"),
        ({"metadata": {"f": object()}}, "metadata cannot be stored as JSON"),
        ({"recipe": _Recipe()}, "recipe must be a dict, got _Recipe (call .model_dump(mode='json') first)"),
    ],
)
def test_bad_model_arguments(registry: Registry, dag: Dag, kwargs: dict, message: str) -> None:
    args = {"name": "new", "path": "/m/new", "kind": "encoder"} | kwargs
    with pytest.raises(RegistryError) as err:
        registry.register_model(**args)
    assert message in str(err.value)
    assert registry.next_version("new") == 0


def test_set_status_rejects_unknown_status(registry: Registry, dag: Dag) -> None:
    with pytest.raises(RegistryError, match=r"unknown model status 'best': use one of candidate, champion"):
        registry.set_status(dag.base.id, "best")
    with pytest.raises(RegistryError, match=r"unknown model status 'x'"):
        registry.list_models(status="x")
    assert registry.get_model(dag.base.id).status == "champion"


def test_json_values_are_normalised(registry: Registry) -> None:
    rec = registry.register_model(
        name="j",
        path=Path("/m/j"),
        kind="module",
        metadata={"loss": float("nan"), "acc": np.float32(0.5), "out": Path("/o"), "ks": (1, 2)},
    )
    assert rec.path == "/m/j"
    assert registry.get_model(rec.id).metadata == {"loss": "nan", "acc": 0.5, "out": "/o", "ks": [1, 2]}


def test_model_dir(registry: Registry, tmp_path: Path) -> None:
    assert registry.model_dir("comp-student", 3) == (tmp_path / "home").resolve() / "models/comp-student/v3"
    bare = Registry(f"sqlite:///{tmp_path}/bare.db")
    try:
        with pytest.raises(RegistryError, match=r"no home directory: open it with Registry.open\(home\)"):
            bare.model_dir("x", 0)
    finally:
        bare.close()


def test_persists_and_uses_wal(tmp_path: Path, dag: Dag, registry: Registry) -> None:
    registry.close()
    with Registry.open(tmp_path / "home") as again:
        assert again.get_model(dag.merged.id) == dag.merged
        assert again.url == f"sqlite:///{(tmp_path / 'home').resolve()}/registry.db"
    with sqlite3.connect(tmp_path / "home" / "registry.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"cannot open registry URL 'nonsense': .*use sqlite:///path"):
        Registry("nonsense")
    with pytest.raises(RegistryError, match=r"cannot open registry URL 'nosuchdb://x/y'"):
        Registry("nosuchdb://x/y")
    with pytest.raises(RegistryError, match=r"cannot open registry sqlite:///.*: unable to open database"):
        Registry(f"sqlite:///{tmp_path}/missing/dir/r.db")


def test_home_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match=r"registry home .*file is a file; pass a directory"):
        Registry.open(tmp_path / "file")


def test_in_memory_url_works() -> None:
    with Registry("sqlite://") as mem:
        rec = mem.register_model(name="m", path="/m", kind="module")
        assert mem.get_model("m:v0") == rec
        assert mem.home is None
