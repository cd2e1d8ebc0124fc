"""The machinery of ``fanbu bench adapt`` end to end on toy features (no encoder, no text)."""

from __future__ import annotations

import pytest
from rich.console import Console

from fanbu.bench.adapt import run_settings
from fanbu.bench.adapt.plan import AdaptBenchSettings, bench_settings
from fanbu.bench.adapt.report import print_report, summarise, targets
from fanbu.bench.adapt.setting import METHODS, TaskData, run_setting
from fanbu.bench.work import WorkDir
from fanbu.errors import ConfigError
from fanbu.meta.artefacts import load_forest, load_meta_init
from tests.meta.conftest import toy_task

NAMES = {"comp": 3, "rec": 4, "sci": 3, "bbc-news": 3}


def _data() -> dict[str, TaskData]:
    out = {}
    for i, (name, labels) in enumerate(NAMES.items()):
        splits = {s: toy_task(name, labels, per_label=n, seed=10 * i + j)
                  for j, (s, n) in enumerate((("train", 12), ("validation", 4), ("test", 10)))}
        words = {s: toy_task(name, labels, per_label=len(t.labels) // labels, dim=16, seed=100 + 10 * i + j)
                 for j, (s, t) in enumerate(splits.items())}
        out[name] = TaskData(splits, words, {s: f"{name}-{s}" for s in splits})
    return out


def _settings() -> AdaptBenchSettings:
    meta = {"hidden": 6, "k_shot": 2, "query": 2, "iterations": 3, "meta_batch": 2, "inner_steps": 2}
    return AdaptBenchSettings.model_validate({
        "domains": ["comp", "rec", "sci"], "held_out": ["bbc-news"], "shots": [2, 4], "draws": 2,
        "scratch_features": 16, "random_forest_trees": 5, "forest_max_per_label": 8,
        "fomaml": {"method": "fomaml", **meta}, "reptile": {"method": "reptile", **meta},
        "metasgd": {"method": "metasgd", **meta},
        "adapt": {"steps": 3, "lr_grid": [0.1, 0.5], "selection_episodes": 1, "selection_query": 2},
        "forest": {"trees": 3, "depth": 2, "tree_features": 6, "node_features": 2, "thresholds": 3, "min_node": 4,
                   "basis_dims": 8},
    })


def test_bench_rows_targets_table_and_resume(tmp_path, one_thread) -> None:
    console = Console(quiet=True)
    settings = _settings()
    results = run_settings(_data(), settings, WorkDir(tmp_path, console))
    assert [r["test"] for r in results] == ["comp", "rec", "sci", "bbc-news"]
    assert results[0]["meta_domains"] == ["rec", "sci"] and results[-1]["meta_domains"] == ["comp", "rec", "sci"]
    rows = [row for r in results for row in r["rows"]]
    assert len(rows) == 4 * 2 * 2 * len(METHODS)
    adapt = summarise(rows)
    assert len(adapt) == 4 * 2 * len(METHODS)
    assert all(0.0 <= r["acc_mean"] <= 1.0 and r["draws"] == 2 and r["acc_lo"] <= r["acc_mean"] <= r["acc_hi"]
               for r in adapt)
    goals = targets(adapt, 10.0, quick=True, quick_seconds=1800)
    assert goals["quick_seconds"]["met"] and set(goals) >= {"fomaml_vs_v0_init_k4_k8", "meta_forest_vs_random_forest_k8"}
    assert "interval" not in goals["fomaml_vs_v0_init_k4_k8"]  # no per-draw rows given
    with_draws = targets(adapt, 10.0, quick=True, quick_seconds=1800, draws=rows)
    gap = with_draws["fomaml_vs_v0_init_k4_k8"]
    assert gap["value"] == pytest.approx(goals["fomaml_vs_v0_init_k4_k8"]["value"])  # the same mean
    assert gap["interval"][0] <= gap["value"] <= gap["interval"][1]  # over the 2 draws
    assert "interval" not in with_draws["fomaml_8_vs_v0_init_16"]  # a count of tasks has none
    report = {"command": "fanbu bench adapt", "seconds": 1.0, "adapt": adapt, "target": goals}
    recorder = Console(record=True, width=200)
    print_report(report, recorder)
    assert "meta_forest" in recorder.export_text()
    body, provenance = load_meta_init(tmp_path / "models" / "comp" / "fomaml")
    assert body.hidden == 6 and provenance.data_fingerprints == {"rec": "rec-train", "sci": "sci-train"}
    forest, _ = load_forest(tmp_path / "models" / "comp" / "meta_forest")
    assert forest.meta_domains == ["rec", "sci"]
    again = run_settings(_data(), settings, WorkDir(tmp_path, console))  # read back, not run again
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in results]
    assert again[0]["rows"] == results[0]["rows"]


def test_a_test_task_among_the_meta_domains_is_refused() -> None:
    data = _data()
    with pytest.raises(ConfigError, match="remove it from the meta-training domains"):
        run_setting("comp", data["comp"], {"comp": data["comp"], "rec": data["rec"]}, _settings())


def test_bench_settings_quick_and_checks() -> None:
    quick = bench_settings(True)
    assert quick.draws >= 5 and quick.shots == [4, 8, 16, 32] and quick.max_length == 128
    assert bench_settings(False, draws=7).draws == 7
    with pytest.raises(ConfigError, match="max_train_per_label"):
        bench_settings(True, overrides=["max_train_per_label=20"])


def test_the_command_is_registered() -> None:
    from typer.testing import CliRunner

    from fanbu.cli import app

    result = CliRunner().invoke(app, ["bench", "adapt", "--help"])
    assert result.exit_code == 0
    assert "--draws" in result.output and "--quick" in result.output and "--work" in result.output


def test_the_suite_runs_it(tmp_path) -> None:
    from fanbu.bench import suite

    assert "adapt" in suite.BENCHES and "adapt" in suite.RUNNERS
    settings = suite.SuiteSettings(quick=True, out_dir=tmp_path)
    assert suite.command_of("adapt", settings, tmp_path / "a.json") == (
        f"fanbu bench adapt --quick --work {tmp_path / 'work' / 'adapt'} --out {tmp_path / 'a.json'}"
    )
