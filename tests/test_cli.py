import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.models import EncoderHandle
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args", [[], ["demo"], ["lineage"], ["models"], ["validate"], ["version"], ["data"], ["data", "list"], ["data", "show"],
     ["derive"], ["stages"], ["bench"], ["bench", "derive"]]
)
def test_every_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_validate_prints_the_resolved_recipe():
    result = runner.invoke(app, ["validate", str(ROOT / "recipes" / "demo.yaml"), "train.epochs=7"])
    assert result.exit_code == 0, result.output
    assert "epochs: 7" in result.output and "max_test: 200" in result.output


def test_bad_recipe_exits_2_with_the_field_path(tmp_path):
    bad = tmp_path / "demo.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "train.epoch: unknown key" in result.output


def test_bad_override_on_demo_is_rejected_before_any_work(tmp_path):
    result = runner.invoke(app, ["demo", "train.lr=fast", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "train.lr" in result.output and "valid number" in result.output


def test_lineage_prints_the_tree_and_exports_json(tmp_path):
    registry = Registry.open(tmp_path)
    handle = EncoderHandle.tiny()
    handle.add_head("t", ["a", "b"])
    path = registry.model_dir("small", 0)
    handle.save(path, Provenance(name="small:v0"))
    base = registry.register_model(name="base", path="hub:x", kind="encoder", status="archived")
    child = registry.register_model(name="small", path=path, kind="encoder", parents=[base.id], relation="finetune")
    registry.record_evaluation(child.id, domain="t", split="test", metrics={"accuracy": 0.75})
    registry.close()
    out = tmp_path / "lineage.json"
    result = runner.invoke(app, ["lineage", "--home", str(tmp_path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "base:v0" in result.output and "small:v0" in result.output
    exported = json.loads(out.read_text())
    assert {"parent": "base:v0", "child": "small:v0", "relation": "finetune"} in exported["edges"]
    listing = runner.invoke(app, ["models", "--home", str(tmp_path), "--name", "small"])
    assert listing.exit_code == 0 and "small:v0" in listing.output and "archived" not in listing.output


def test_data_list_names_the_builtin_sources():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0
    assert "20newsgroups" in result.output and "bbc-news" in result.output


def test_unknown_builtin_source_is_a_clear_error():
    result = runner.invoke(app, ["data", "show", "imagenet"])
    assert result.exit_code == 2
    assert "imagenet" in result.output


def test_stages_lists_every_registered_stage_with_its_reference():
    result = runner.invoke(app, ["stages"])
    assert result.exit_code == 0
    for name in ("finetune", "prune", "distill", "quantize", "search"):
        assert name in result.output
    assert "arxiv.org" in result.output
