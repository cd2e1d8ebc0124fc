"""The demo end to end on the packaged MiniLM and the real 20 Newsgroups files, on small slices."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.models import EncoderHandle
from fanbu.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_demo_trains_evaluates_and_registers_large_v0(tmp_path):
    args = ["demo", "--recipe", str(ROOT / "recipes" / "demo-tiny.yaml"), "--home", str(tmp_path),
            "max_length=32", "benchmark.max_test=30"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy per domain" in result.output
    registry = Registry.open(tmp_path)
    large = registry.get_model("large:v0")
    assert large.parents == ("all-MiniLM-L6-v2:v0",)  # champion, unless the feedback step promoted large:v1
    domains = {e.domain for e in registry.evaluations("large:v0") if e.metric == "accuracy"}
    assert domains == {"comp", "rec", "sci", "politics", "religion", "bbc-news", "reuters-r8"}
    speed = {e.metric: e.value for e in registry.evaluations("large:v0", domain="*")}
    assert speed["latency_b1_p95_ms"] >= speed["latency_b1_p50_ms"] > 0 and speed["params"] > 2e7
    assert {d.split for d in registry.model_datasets("large:v0")} == {"public"}
    run = registry.list_runs()[0]
    assert run.status == "succeeded"
    resolved = tmp_path / "runs" / run.id / "recipe.resolved.yaml"
    assert "max_length: 32" in resolved.read_text()
    small = {m.name for m in registry.list_models() if m.name.endswith(".quantize")}
    assert small == {f"{d}.quantize" for d in ("comp", "rec", "sci", "politics", "religion")}
    comp = registry.latest("comp.quantize")
    assert [a.id for a in registry.ancestors(comp.id)][:3] == ["comp.distill:v0", "comp.prune:v0", "large:v0"]
    int8 = {e.metric: e.value for e in registry.evaluations(comp.id) if e.split == "test-int8"}
    assert 0.0 <= int8["accuracy"] <= 1.0
    assert "small models (int8, onnxruntime)" in result.output
    handle = EncoderHandle.load(large.path)
    assert set(handle.labels) == domains
    assert json.loads((Path(large.path) / "fanbu.json").read_text())["provenance"]["parents"] == [large.parents[0]]
    # One generation: the small models fed back into large v0 (their fp32 twins), the candidate gated.
    experts = {f"{d}.quantize:v0" for d in ("comp", "rec", "sci", "politics", "religion")}
    assert not [m for m in registry.list_models() if m.name.endswith(".finetune")]  # no full-size experts
    candidate = registry.get_model("large:v1")
    assert set(candidate.parents) == {"large:v0", *experts} and candidate.relation == "distilled"
    assert candidate.status in ("champion", "rejected") and candidate.reason
    champion = "large:v1" if candidate.status == "champion" else "large:v0"
    assert registry.latest("large", status="champion").id == champion
    assert "candidates from large:v0" in result.output
    report = Path(registry.home) / "report.html"
    assert f"Report written to {report}" in result.output and report.is_file()
    assert report.read_text(encoding="utf-8").count("<svg") == 3
    registry.close()


def test_demo_refuses_a_small_swarm_without_small_models(tmp_path):
    args = ["demo", "--recipe", str(ROOT / "recipes" / "demo-tiny.yaml"), "--home", str(tmp_path),
            "derive.enabled=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "feedback.swarm" in result.output and "derive.enabled" in result.output
    assert not (tmp_path / "models").exists()  # refused before anything was trained
