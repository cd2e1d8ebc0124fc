"""Datasets, runs and evaluations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fanbu.errors import RegistryError
from fanbu.registry import DatasetLink, Registry

if TYPE_CHECKING:
    from conftest import Dag


def test_register_dataset_is_idempotent(registry: Registry) -> None:
    first = registry.register_dataset(
        name="med", fingerprint="0123456789abcdef" * 4, n_rows=50, domain="med", source="data/med.jsonl"
    )
    assert first.id == "med@0123456789ab"
    again = registry.register_dataset(name="med", fingerprint="0123456789abcdef" * 4, n_rows=50)
    assert again == first
    other = registry.register_dataset(name="med", fingerprint="f" * 64, n_rows=51, split="test")
    assert other.id == "med@ffffffffffff"
    assert [d.id for d in registry.list_datasets()] == [first.id, other.id]
    assert registry.get_dataset(other.id).split == "test"


def test_model_datasets_and_links(registry: Registry, dag: Dag) -> None:
    assert registry.model_datasets(dag.student.id) == [dag.data]
    assert registry.model_datasets(dag.merged.id) == []
    assert registry.dataset_links() == [DatasetLink(dag.student.id, dag.data.id, "train")]
    with pytest.raises(RegistryError, match=r"unknown model 'no:v0'"):
        registry.model_datasets("no:v0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "dataset name must be a non-empty string"),
        ({"fingerprint": None}, "dataset fingerprint must be a non-empty string, got None"),
        ({"n_rows": -2}, "dataset 'd': n_rows must be a non-negative int, got -2"),
        ({"domain": ""}, "dataset domain must be a non-empty string"),
        ({"split": "s" * 300}, "dataset split is 300 characters long; keep it to 200"),
        ({"metadata": ["a"]}, "metadata must be a dict, got list"),
    ],
)
def test_bad_dataset_arguments(registry: Registry, kwargs: dict, message: str) -> None:
    with pytest.raises(RegistryError) as err:
        registry.register_dataset(**({"name": "d", "fingerprint": "ab12", "n_rows": 3} | kwargs))
    assert message in str(err.value)
    assert registry.list_datasets() == []


def test_unknown_dataset_id(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"unknown dataset 'x@1': run `fanbu lineage`"):
        registry.get_dataset("x@1")


def test_run_life_cycle(registry: Registry, tmp_path) -> None:
    run = registry.start_run("derive", recipe={"method": "prune"}, out_dir=str(tmp_path))
    assert run.status == "running" and run.finished_at is None and len(run.id) == 12
    done = registry.finish_run(run.id, summary={"loss": 0.25, "diverged": float("inf")})
    assert done.status == "succeeded" and done.summary == {"loss": 0.25, "diverged": "inf"}
    assert done.finished_at >= done.started_at
    failed = registry.finish_run(registry.start_run("feedback").id, status="failed")
    assert [r.id for r in registry.list_runs()] == [run.id, failed.id]
    assert registry.get_run(failed.id).status == "failed"
    with pytest.raises(RegistryError, match=rf"run {run.id} already finished \(succeeded\); start a new run"):
        registry.finish_run(run.id, status="failed")
    assert registry.get_run(run.id).status == "succeeded"


def test_run_errors(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"unknown run 'nope': list runs with Registry.list_runs\(\)"):
        registry.finish_run("nope")
    run = registry.start_run("evaluate")
    with pytest.raises(
        RegistryError, match=r"unknown final run status 'running': use one of succeeded, failed"
    ):
        registry.finish_run(run.id, status="running")
    with pytest.raises(RegistryError, match=r"run kind must be a non-empty string"):
        registry.start_run("")


def test_evaluations(registry: Registry, dag: Dag) -> None:
    run = registry.start_run("evaluate")
    rows = registry.record_evaluation(
        dag.student.id,
        domain="comp",
        split="test",
        metrics={"acc": 0.91, "f1": 0.875},
        dataset_fingerprint=dag.data.fingerprint,
        run_id=run.id,
    )
    assert [(r.metric, r.value) for r in rows] == [("acc", 0.91), ("f1", 0.875)]
    assert rows[0].created_at == rows[1].created_at and rows[0].run_id == run.id
    registry.record_evaluation(dag.student.id, domain="med", split="test", metrics={"acc": 0.5})
    registry.record_evaluation(dag.base.id, domain="comp", split="test", metrics={"acc": 0.95})
    assert len(registry.evaluations()) == 4
    assert [e.metric for e in registry.evaluations(dag.student.id)] == ["acc", "f1", "acc"]
    assert [e.model_id for e in registry.evaluations(domain="comp", model_id=dag.base.id)] == [dag.base.id]
    assert registry.evaluations(model_id=dag.pruned.id) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": {}}, "metrics must be a non-empty dict of name -> value"),
        ({"metrics": {"acc": 0.9, "loss": float("nan")}}, "metric 'loss' is nan: record only finite values"),
        ({"metrics": {"acc": "high"}}, "metric 'acc': value 'high' is not a number"),
        ({"metrics": {"": 1.0}}, "metric names must be non-empty strings of at most 200 characters"),
        ({"dataset_fingerprint": ""}, "dataset_fingerprint must be a non-empty string"),
        ({"domain": ""}, "domain must be a non-empty string"),
        ({"run_id": "missing"}, "unknown run 'missing'"),
        ({"model_id": "ghost:v0"}, "unknown model 'ghost:v0'"),
    ],
)
def test_bad_evaluations_write_nothing(registry: Registry, dag: Dag, kwargs: dict, message: str) -> None:
    args = {"model_id": dag.student.id, "domain": "comp", "split": "test", "metrics": {"acc": 0.9}} | kwargs
    with pytest.raises(RegistryError) as err:
        registry.record_evaluation(args.pop("model_id"), **args)
    assert message in str(err.value)
    assert registry.evaluations() == []
