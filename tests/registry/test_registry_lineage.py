"""The lineage view: JSON export and the rich tree."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.console import Console

from fanbu.registry import Registry, lineage_json, lineage_tree
from fanbu.registry.lineage import format_scores, latest_metrics

if TYPE_CHECKING:
    from conftest import Dag


def _render(tree: object, width: int = 120) -> str:
    console = Console(record=True, width=width)
    console.print(tree)
    return console.export_text()


def test_lineage_json_round_trips(registry: Registry, dag: Dag) -> None:
    run = registry.start_run("derive")
    registry.record_evaluation(
        dag.merged.id, domain="comp", split="test", metrics={"acc": 0.9}, run_id=run.id
    )
    data = lineage_json(registry)
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"models", "edges", "datasets", "model_datasets", "evaluations", "runs"}
    assert [m["id"] for m in data["models"]] == [
        "teacher:v0",
        "comp-student:v0",
        "comp-pruned:v0",
        "comp-merged:v0",
        "comp-merged:v1",
    ]
    assert {"parent": "comp-pruned:v0", "child": "comp-merged:v0", "relation": "merge"} in data["edges"]
    assert {"parent": "comp-student:v0", "child": "comp-merged:v0", "relation": "merge"} in data["edges"]
    assert len(data["edges"]) == 5
    assert data["model_datasets"] == [{"model": "comp-student:v0", "dataset": dag.data.id, "role": "train"}]
    assert data["models"][3]["parents"] == ["comp-student:v0", "comp-pruned:v0"]
    assert data["models"][0]["created_at"].endswith("+00:00")
    assert data["evaluations"][0]["run_id"] == run.id and data["runs"][0]["id"] == run.id
    assert data["datasets"][0]["fingerprint"] == "ab" * 32


def test_lineage_tree_renders(registry: Registry, dag: Dag) -> None:
    registry.record_evaluation(dag.merged.id, domain="comp", split="test", metrics={"acc": 0.8})
    registry.record_evaluation(dag.merged.id, domain="comp", split="test", metrics={"acc": 0.9134, "f1": 0.9})
    registry.record_evaluation(dag.merged.id, domain="med", split="test", metrics={"acc": 0.5})
    registry.set_status(dag.pruned.id, "rejected", reason="too slow")
    text = _render(lineage_tree(registry))
    lines = text.splitlines()
    assert lines[0].startswith("lineage of sqlite:///")
    assert "teacher:v0  causal_lm  champion" in lines[1]
    assert "comp-student:v0  encoder  candidate  distilled" in text
    assert "comp-pruned:v0  encoder  rejected  pruned" in text
    merged = [line for line in lines if "comp-merged:v0" in line]
    assert len(merged) == 2  # under both parents
    assert "merge  comp acc 0.913 f1 0.9 · med acc 0.5" in merged[0]
    assert merged[1].strip().endswith("comp-merged:v0 (see above)")
    assert sum("comp-merged:v1" in line for line in lines) == 1  # the subtree is expanded once
    assert lines.index(merged[0]) < next(i for i, line in enumerate(lines) if "comp-merged:v1" in line)
    assert "acc" not in _render(lineage_tree(registry, evaluations=False))


def test_lineage_tree_empty_and_deep(registry: Registry) -> None:
    assert "no models registered yet" in _render(lineage_tree(registry))
    parent: list[str] = []
    for _ in range(60):  # a long chain of generations renders without recursion trouble
        parent = [registry.register_model(name="gen", path="/g", kind="module", parents=parent).id]
    text = _render(lineage_tree(registry), width=400)  # 60 levels of indentation need the width
    assert "gen:v59  module  candidate" in text and "gen:v58 (see above)" not in text


def test_latest_metrics_keeps_last_value(registry: Registry, dag: Dag) -> None:
    registry.record_evaluation(dag.base.id, domain="comp", split="val", metrics={"acc": 0.7, "loss": 1.234})
    registry.record_evaluation(dag.base.id, domain="comp", split="test", metrics={"acc": 0.75})
    scores = latest_metrics(registry.evaluations())
    assert scores == {dag.base.id: {"comp": {"acc": 0.75, "loss": 1.234}}}
    assert format_scores(scores[dag.base.id]) == "comp acc 0.75 loss 1.23"
