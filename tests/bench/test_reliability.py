"""The reliability bench's parts against a real server on tiny models (the bench runs them on MiniLM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fanbu.bench.reliability.faults import kill_commands, kill_server
from fanbu.bench.reliability.hostile import hostile_bodies
from fanbu.bench.reliability.load import sustain
from fanbu.bench.reliability.neighbours import neighbours
from fanbu.bench.reliability.plan import ReliabilityPlan
from fanbu.bench.reliability.run import doctor_counts, targets
from fanbu.registry import Registry
from fanbu.serve.loadtest import ServerProcess, start_server
from tests.serve.helpers import TEXTS, TOKEN, register_tiny

OVERRIDES = ["models=[small]", "cascades={edge: {small: small, large: large, threshold: 0.5}}",
             "limits.max_text_chars=200"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability") / "home"
    registry = Registry.open(root)
    register_tiny(registry, "small", seed=0)
    register_tiny(registry, "large", seed=1, hidden=48)
    registry.close()
    return root


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[ServerProcess]:
    server = start_server(home, OVERRIDES, TOKEN, home.parent / "serve.log")
    yield server
    server.stop()


def test_every_hostile_body_is_refused_and_no_good_neighbour_fails(server: ServerProcess) -> None:
    for route in ("small", "edge"):
        result = neighbours(server.url, TOKEN, route, TEXTS, rounds=3, max_text_chars=200)
        assert result["good_requests"] == result["bad_requests"] == 18
        assert result["good_failed"] == 0, result["statuses"]
        assert result["bad_5xx"] == 0, result["statuses"]
        bad_statuses = {s for kind, counts in result["statuses"].items() if kind != "good" for s in counts}
        assert bad_statuses <= {"400", "404", "413", "415", "422"}, result["statuses"]
    assert len(hostile_bodies("small", 200)) >= 12


def test_sustained_load_reports_latency_memory_and_statuses(server: ServerProcess) -> None:
    result = sustain(server.url, TOKEN, "small", TEXTS, server.proc.pid, rate=20.0, seconds=4.0, seed=0,
                     max_text_chars=200, hostile_share=0.25)
    assert result["requests"] == 80
    assert set(result["status_counts"]) <= {"200", "400", "404", "413", "415", "422", "429"}
    assert result["good_failed"] == 0
    assert result["p95_first_minute_ms"] > 0 and result["p95_last_minute_ms"] > 0
    assert result["rss_start_mb"] > 0


def test_kill_9_under_load_loses_no_acknowledged_prediction_or_feedback(home: Path, tmp_path: Path) -> None:
    registry = Registry.open(home)
    url = registry.url
    registry.close()
    result = kill_server(home, OVERRIDES, TOKEN, url, "edge", TEXTS, tmp_path, kills=2, seed=0,
                         diagnose=lambda: doctor_counts(home))
    assert result["kills"] == 2
    assert result["acknowledged"] >= 40
    assert result["acknowledged_feedback"] > 0
    assert result["lost_records"] == 0
    assert result["rerun_status"] == 200
    assert result["corrupt_artefacts"] == result["registry_mismatches"] == 0


def test_a_killed_command_is_counted_and_rerun(home: Path, tmp_path: Path) -> None:
    """``fanbu models`` finishes fast; with a moment near zero it is killed before it can."""
    result = kill_commands("models", ["models", "--home", str(home)], tmp_path, kills=2, full_seconds=0.01,
                           diagnose=lambda: doctor_counts(home), seed=0)
    assert result["kills"] == 2
    assert result["rerun_exit_code"] == 0
    assert len(result["after_each_kill"]) == 2
    assert result["corrupt_artefacts"] == result["registry_mismatches"] == 0


def test_targets_follow_the_figures() -> None:
    plan = ReliabilityPlan.make(quick=True)
    fault = {"kills": 5, "lost_records": 0, "corrupt_artefacts": 0, "registry_mismatches": 0}
    report = {
        "seconds": 900.0,
        "fuzz": {"requests": 2500, "responses_5xx": 0, "schema_violations": 0, "loaders_cases": 1000,
                 "loader_tracebacks": 0, "recipe_cases": 1000, "recipe_tracebacks": 1},
        "neighbours": {"m": {"good_failed": 0}, "c": {"good_failed": 0}},
        "load": {"p95_first_minute_ms": 10.0, "p95_last_minute_ms": 11.0, "rss_growth_pct": 1.0,
                 "status_counts": {"200": 90, "422": 9, "429": 1}},
        "faults": [{"target": t, **fault} for t in ("serve", "derive", "feedback")],
    }
    result = targets(report, plan)
    assert not result["recipe_tracebacks"]["met"]
    assert all(t["met"] for name, t in result.items() if name != "recipe_tracebacks")
    report["load"]["p95_last_minute_ms"] = 12.5
    report["load"]["status_counts"]["500"] = 1
    result = targets(report, plan)
    assert not result["load_p95_drift"]["met"] and not result["load_other_status"]["met"]


def test_the_cli_and_the_suite_know_the_reliability_bench(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fanbu.bench import suite
    from fanbu.cli import app

    result = CliRunner().invoke(app, ["bench", "reliability", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output
    assert "reliability" in suite.BENCHES and "reliability" in suite.RUNNERS
    settings = suite.SuiteSettings(quick=True, out_dir=tmp_path)
    assert suite.command_of("reliability", settings, tmp_path / "r.json") == (
        f"fanbu bench reliability --quick --out {tmp_path / 'r.json'}"
    )


def test_fuzz_all_counts_every_part_on_a_registry(home: Path) -> None:
    import dataclasses

    from fanbu.bench.reliability.fuzz import fuzz_all
    from fanbu.recipes import validate_file

    plan = dataclasses.replace(ReliabilityPlan.make(quick=True), fuzz_requests=80, loader_cases=8, recipe_cases=8,
                               model="small", cascade="edge", max_text_chars=200)
    result = fuzz_all(plan, home, TOKEN, seed=0, validate_recipe=validate_file)
    assert result["requests"] >= 60
    assert result["responses_5xx"] == result["schema_violations"] == 0, result["api"]["failures"]
    assert result["loaders_cases"] == 8 and result["recipe_cases"] == 8
    assert result["loader_tracebacks"] == result["recipe_tracebacks"] == 0, result["failures"]
    assert sum(n for key, n in result["api"]["answers"].items() if key.startswith("/v1/predict 200")) >= 1
