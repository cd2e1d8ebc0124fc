"""fanbu bench lm and fanbu bench structure: sections run in order, targets merge, bad sections are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import suite
from fanbu.bench.lm import run as lm_run
from fanbu.bench.structure import run as structure_run
from fanbu.cli import app
from fanbu.errors import ConfigError


def _target(name: str, met: bool) -> dict:
    return {name: {"value": 1.0, "bar": 1.0, "met": met}}


@pytest.fixture
def lm_standins(monkeypatch):
    calls: list[str] = []

    def derive(settings, console, keep=None):
        calls.append(f"derive:{','.join(settings.domains or [])}:{settings.seed}")
        if keep is not None and not keep:
            keep.update({"teacher": "T", "student_05": "S"})
        return {"derive": [{"domain": "bbc-tech", "model": "teacher"}], "target": _target("student_speedup", True)}

    def feedback(quick, console, settings=None):
        calls.append(f"feedback:{settings.seed}")
        return {"feedback": [{"method": "lm_merge"}], "target": _target("feedback_pgr", False), "seconds": 1}

    def serve(small, large, quick, console):
        calls.append(f"serve:{small}>{large}")
        return {"small": {}, "large": {}, "target": _target("serve_streaming", True)}

    monkeypatch.setattr(lm_run, "run_lm_derive", derive)
    monkeypatch.setattr(lm_run, "run_lm_feedback_bench", feedback)
    monkeypatch.setattr(lm_run, "run_lm_serve_bench", serve)
    for name in ("print_derive_rows", "print_lm_feedback_table", "print_lm_serve_table"):
        monkeypatch.setattr(lm_run, name, lambda *a, **k: None)
    return calls


def test_lm_bench_runs_every_section_and_merges_targets(lm_standins, tmp_path: Path) -> None:
    report = lm_run.run_bench(True, tmp_path / "lm.json", Console(quiet=True))
    assert lm_standins == ["derive:bbc-tech:0", "feedback:0", "serve:S>T"]  # serve gets derive's student
    assert set(report["target"]) == {"student_speedup", "feedback_pgr", "serve_streaming", "quick_seconds"}
    saved = json.loads((tmp_path / "lm.json").read_text())
    assert saved["derive"] and saved["feedback"] and "serve" in saved and saved["command"].startswith("fanbu bench lm")


def test_lm_serve_alone_derives_its_student_first(lm_standins, tmp_path: Path) -> None:
    report = lm_run.run_bench(True, tmp_path / "lm.json", Console(quiet=True), ("serve",))
    assert lm_standins == ["derive:bbc-tech:0", "serve:S>T"]
    assert "quick_seconds" not in report["target"]  # only the whole bench is timed against the bar
    assert "--section serve" in report["command"]


def test_lm_bench_over_seeds_decides_each_target_on_its_mean(monkeypatch, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def derive(settings, console, keep=None):
        seen.append(("derive", settings.seed))
        if keep is not None:
            keep.update({"teacher": "T", "student_05": "S"})
        ratio = {0: 1.4, 1: 1.6, 2: 1.45}[settings.seed]  # <= 1.5 on the mean (1.483), not in every draw
        return {"derive": [], "target": {"student_05_vs_domain_teacher": {"value": ratio, "bar": 1.5, "met": True}}}

    def feedback(quick, console, settings=None):
        seen.append(("feedback", settings.seed))
        pgr = None if settings.seed == 1 else 0.9  # no method passed the gate in draw 1
        return {"feedback": [], "target": {"feedback_best_pgr": {"value": pgr, "bar": 0.7, "met": pgr is not None}}}

    def serve(small, large, quick, console):
        return {"target": {"serve_streaming": {"value": 1.0, "bar": 1.0, "met": True}}}

    monkeypatch.setattr(lm_run, "run_lm_derive", derive)
    monkeypatch.setattr(lm_run, "run_lm_feedback_bench", feedback)
    monkeypatch.setattr(lm_run, "run_lm_serve_bench", serve)
    for name in ("print_derive_rows", "print_lm_feedback_table", "print_lm_serve_table"):
        monkeypatch.setattr(lm_run, name, lambda *a, **k: None)
    report = lm_run.run_bench(True, tmp_path / "lm.json", Console(quiet=True), seeds=3)
    assert seen == [("derive", 0), ("feedback", 0), ("derive", 1), ("feedback", 1), ("derive", 2), ("feedback", 2)]
    target = report["target"]
    ratio = target["student_05_vs_domain_teacher"]
    assert ratio["value"] == pytest.approx(1.4833, abs=1e-4) and ratio["met"] is True
    assert ratio["interval"][0] < ratio["value"] < ratio["interval"][1] and ratio["values"] == [1.4, 1.6, 1.45]
    assert target["feedback_best_pgr"]["met"] is False and target["feedback_best_pgr"]["values"][1] is None
    assert target["serve_streaming"]["met"] is True and target["quick_seconds"]["met"] is True
    assert len(report["runs"]) == 3 and report["mean"]["serve_streaming"] == 1.0
    assert "--seeds 3" in report["command"] and "lm" in suite.SEEDED
    with pytest.raises(ValueError, match="no direction"):
        lm_run.over_seeds([{"made_up": {"value": 1.0, "bar": 1.0, "met": True}}])
    with pytest.raises(ConfigError, match="at least 1"):
        lm_run.run_bench(True, tmp_path / "z.json", Console(quiet=True), seeds=0)


def test_unknown_sections_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose from"):
        lm_run.run_bench(True, tmp_path / "x.json", Console(quiet=True), ("derive", "nope"))
    with pytest.raises(ConfigError, match="choose from"):
        structure_run.run_bench(True, tmp_path / "x.json", Console(quiet=True), ("bogus",))
    with pytest.raises(ConfigError, match="name the section first"):
        structure_run.run_bench(True, tmp_path / "x.json", Console(quiet=True), ("hierarchy",), ["seeds=5"])


def test_structure_bench_passes_each_section_its_overrides(monkeypatch, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def hierarchy(settings, log):
        seen["hierarchy"] = settings.seeds
        return {"hierarchy": [{"method": "flat"}], "target": _target("hierarchical_vs_flat_mean_k8", False)}

    def causal(settings, log):
        seen["causal"] = settings.seeds
        return {"causal": [], "attribution": {"planted_token_rank": []}, "target": _target("plant_bites", True)}

    def merge(settings, log):
        seen["merge"] = settings.seeds
        return {"merge": [], "levels_vs_flat": {}, "seconds": 1.0}

    monkeypatch.setattr(structure_run, "run_hierarchy", hierarchy)
    monkeypatch.setattr(structure_run, "run_causal", causal)
    monkeypatch.setattr(structure_run, "run_merge", merge)
    for name in ("print_hierarchy", "print_causal", "print_merge"):
        monkeypatch.setattr(structure_run, name, lambda *a: None)
    report = structure_run.run_bench(
        True,
        tmp_path / "s.json",
        Console(quiet=True),
        sets=["hierarchy.seeds=5", "causal.seeds=2", "merge.seeds=4"],
    )
    assert seen == {"hierarchy": 5, "causal": 2, "merge": 4}
    assert report["merge"] == [] and report["merge_detail"] == {"seconds": 1.0}
    # the 30-minute bar times the sections (hierarchy, causal); merge alone is not timed against it
    alone = structure_run.run_bench(True, tmp_path / "m.json", Console(quiet=True), ("merge",))
    assert "quick_seconds" not in alone["target"]
    timed = structure_run.run_bench(True, tmp_path / "t.json", Console(quiet=True), ("hierarchy", "causal"))
    assert "quick_seconds" in timed["target"]
    assert {"hierarchical_vs_flat_mean_k8", "plant_bites", "quick_seconds"} <= set(report["target"])
    assert "--set hierarchy.seeds=5" in report["command"]
    # --seeds sets every section's draws (an explicit --set still wins) and times one draw against the bar
    seeded = structure_run.run_bench(
        True, tmp_path / "d.json", Console(quiet=True), structure_run.SECTIONS, ["merge.seeds=2"], seeds=3
    )
    assert seen == {"hierarchy": 3, "causal": 3, "merge": 2}
    assert seeded["seeds"] == 3 and "--seeds 3" in seeded["command"]
    assert "over 3 draws / 3" in seeded["target"]["quick_seconds"]["rule"]
    with pytest.raises(ConfigError, match="at least 1"):
        structure_run.run_bench(True, tmp_path / "z.json", Console(quiet=True), seeds=0)
    assert "structure" in suite.SEEDED


def test_both_benches_are_commands_and_in_the_suite() -> None:
    for name in ("lm", "structure"):
        result = CliRunner().invoke(app, ["bench", name, "--help"])
        assert result.exit_code == 0 and "--section" in result.output
        assert name in suite.BENCHES and name in suite.RUNNERS
