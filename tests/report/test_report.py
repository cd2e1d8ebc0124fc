"""``fanbu report``: one self-contained HTML page from the registry alone, text escaped, no URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.registry import Registry
from fanbu.report import ReportError, build_report, write_report
from fanbu.report.data import collect, feedback_views, size_points
from fanbu.report.lineage import layers, positions

HOSTILE = '<script>alert("x")</script> & co'


def _model(registry: Registry, name: str, **fields):
    return registry.register_model(name=name, path=f"/models/{name}", kind="encoder", **fields)


@pytest.fixture
def registry(tmp_path: Path):
    """A hand-made registry: base -> large v0 -> expert and small model -> a rejected candidate v1.

    The feedback run records what ``run_feedback`` records; its domain and gate reason carry HTML.
    """
    registry = Registry.open(tmp_path / "home")
    base = _model(registry, "minilm", status="archived")
    v0 = _model(registry, "large", parents=[base.id], relation="finetune", status="champion")
    registry.record_evaluation(v0.id, domain="*", split="speed", metrics={"params": 2.2e7})
    domain = "r&d <lab>"
    small = _model(registry, "rd.prune", parents=[v0.id], relation="pruned", metadata={"params": 3e6})
    registry.record_evaluation(small.id, domain=domain, split="test", metrics={"accuracy": 0.61})
    expert = _model(registry, "rd.finetune", parents=[v0.id], relation="finetune", metadata={"params": 2.2e7})
    v1 = _model(
        registry, "large", parents=[v0.id, expert.id], relation="distilled", metadata={"params": 2.2e7}
    )
    run = registry.start_run("feedback", {})
    for model, scores in (
        (v0, {domain: 0.7, "news": 0.9}),
        (v1, {domain: 0.8, "news": 0.5}),
        (expert, {domain: 0.85}),
    ):
        for task, acc in scores.items():
            registry.record_evaluation(
                model.id, domain=task, split="test", metrics={"accuracy": acc}, run_id=run.id
            )
    reason = f"rejected: news accuracy 0.500 vs champion 0.900 {HOSTILE}"
    registry.set_status(v1.id, "rejected", reason)
    row = {
        "name": "swarm_distill",
        "model": v1.id,
        "seconds": 1.0,
        "pgr_mean": 0.667,
        "forgetting": 40.0,
        "gate": {"status": "rejected", "reason": reason, "passed": False},
    }
    registry.finish_run(
        run.id,
        "succeeded",
        {
            "run": run.id,
            "champion": v0.id,
            "promoted": None,
            "experts": {domain: expert.id},
            "expert_acc": {domain: 0.85},
            "heldout": ["news"],
            "strategies": [row],
        },
    )
    yield registry
    registry.close()


def test_views_read_what_the_feedback_run_recorded(registry) -> None:
    snapshot = collect(registry)
    [view] = feedback_views(snapshot)
    assert view.tasks == ["r&d <lab>", "news"] and view.champion == "large:v0"
    assert view.accuracy["large:v1"] == {"r&d <lab>": 0.8, "news": 0.5}
    assert view.accuracy["rd.finetune:v0"] == {"r&d <lab>": 0.85}
    points = {p["id"]: p for p in size_points(snapshot, [view])}
    assert points["large:v0"]["group"] == "large" and points["large:v0"]["params"] == 2.2e7
    assert points["large:v0"]["accuracy"] == pytest.approx(0.8)
    assert points["rd.prune:v0"]["group"] == "derived" and points["rd.prune:v0"]["params"] == 3e6
    assert "minilm:v0" not in points  # no size, no score


def test_lineage_layers_follow_the_deepest_parent(registry) -> None:
    models = registry.list_models()
    assert layers(models) == [["minilm:v0"], ["large:v0"], ["rd.prune:v0", "rd.finetune:v0"], ["large:v1"]]
    placed = positions(models)
    assert placed["large:v1"][0] == 3.0 and placed["minilm:v0"][0] == 0.0


def test_report_is_self_contained_with_three_figures_and_escaped_text(registry, tmp_path) -> None:
    out = write_report(registry, tmp_path / "out" / "report.html")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3
    for anchor in ("fig-lineage", "fig-accuracy", "fig-size"):
        assert f'<figure id="{anchor}">' in page
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    assert "http" not in page and not re.search(r"""(src|href)=["'](?!#)""", page)
    assert "r&amp;d &lt;lab&gt;" in page  # the domain, in the accuracy figure's tick labels
    for model_id in ("minilm:v0", "large:v0", "large:v1", "rd.prune:v0", "rd.finetune:v0"):
        assert model_id in page
    assert "swarm_distill" in page and "0.667" in page and "+40.0" in page
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_empty_registry_says_to_run_the_demo(tmp_path) -> None:
    empty = Registry.open(tmp_path / "empty")
    with pytest.raises(ReportError, match="run `fanbu demo` first"):
        build_report(empty)
    empty.close()
    result = CliRunner().invoke(app, ["report", "--home", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "run `fanbu demo` first" in result.output
    assert not (tmp_path / "empty" / "report.html").exists()


def test_cli_writes_the_report_and_prints_its_path(registry, tmp_path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", "--home", str(registry.home), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "") and out.read_text().count("<svg") == 3
