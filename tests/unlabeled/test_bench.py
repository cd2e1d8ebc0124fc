"""``fanbu bench unlabeled``'s machinery end to end on toy domains and toy features (no encoder, no corpora)."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

import fanbu.bench.unlabeled as bench
from fanbu.bench.stats import seed_interval
from fanbu.bench.unlabeled.augment_report import targets as augment_targets
from fanbu.bench.unlabeled.report import summarise, targets
from fanbu.unlabeled.recipe import AdaptationRecipe
from tests.unlabeled.helpers import toy_encode


class ToyStore:
    def __init__(self, handle, batch_size):
        self.calls = 0

    def __call__(self, texts):
        return toy_encode(list(texts))


@pytest.fixture
def toy_bench(monkeypatch, toy_sources):
    recipe = AdaptationRecipe.model_validate({
        "shift": {"source": "toy-source", "target": "toy-target",
                  "mapping": {"tech": ["comp.*"], "sports": ["rec.sport.*"], "business": ["sci.med"]}},
        "adapt": {"steps": 10, "batch_size": 8, "target_batch_size": 8, "hidden": 8, "dann_hidden": 8, "lr": 1e-2},
    })
    monkeypatch.setattr(bench, "da_recipe", lambda quick: recipe)
    monkeypatch.setattr(bench, "load_encoder", lambda config: None)
    monkeypatch.setattr(bench, "FeatureStore", ToyStore)
    torch.set_num_threads(1)


def test_the_da_section_runs_end_to_end_and_reads_finished_seeds_back(toy_bench, tmp_path):
    out, work = tmp_path / "unlabeled.json", tmp_path / "work"
    console = Console(record=True, width=200)
    report = bench.run_bench(True, out, console, seeds=2, work=work, sections=("da",))
    saved = json.loads(out.read_text())
    methods = [row["method"] for row in saved["da"]]
    assert methods == ["source_only", "dann", "coral", "mmd", "self_training", "target_supervised"]
    for row in saved["da"]:
        assert 0.0 <= row["target_acc"] <= 1.0 and row["target_acc_interval"] is not None
        assert set(row["f1"]) == {"tech", "sports", "business"}
    source_only = next(r for r in saved["da"] if r["method"] == "source_only")
    assert source_only["gap_closed"] in (None, 0.0)
    assert saved["best"] in ("dann", "coral", "mmd", "self_training")
    assert set(saved["target"]) == {"da_gap_closed", "da_every_class_f1", "quick_seconds"}
    assert all({"value", "bar", "met"} <= set(t) for t in saved["target"].values())
    assert all(row["steps"] == 10 for run in saved["runs"] for row in run["rows"])
    printed = console.export_text()
    assert "target_supervised" in printed and "target da_gap_closed" in printed
    again = bench.run_bench(True, out, Console(quiet=True), seeds=2, work=work, sections=("da",))
    assert again["da"] == report["da"]  # both seeds read back from the work directory


def test_gap_closed_is_the_share_of_the_upper_bound_gap():
    def run(accs):
        rows = [{"method": m, "target_acc": a, "target_macro_f1": a, "f1": {"x": a, "y": a}, "validation": "source",
                 "validation_acc": 0.9} for m, a in accs.items()]
        return {"rows": rows, "data": {"labels": ["x", "y"]}}

    runs = [run({"source_only": 0.6, "dann": 0.8, "target_supervised": 1.0}),
            run({"source_only": 0.5, "dann": 0.6, "target_supervised": 0.9})]
    rows = summarise(runs)
    dann = next(r for r in rows if r["method"] == "dann")
    assert dann["gap_closed"] == pytest.approx((0.5 + 0.25) / 2)
    assert dann["f1_minus_source_only"] == {"x": pytest.approx(0.15), "y": pytest.approx(0.15)}
    met = targets(rows, "dann", 100.0, True, 1800)
    assert met["da_gap_closed"]["value"] == pytest.approx(0.375) and not met["da_gap_closed"]["met"]  # bar 0.5
    assert met["da_every_class_f1"]["met"] and met["quick_seconds"]["met"]
    assert met["da_gap_closed"]["interval"] == pytest.approx(seed_interval([0.5, 0.25]))
    assert met["da_every_class_f1"]["interval"] == pytest.approx(seed_interval([0.2, 0.1]))


def test_the_augment_gain_carries_its_interval_over_seeds():
    def run(seed, none, lm):
        return {"seed": seed, "rows": [{"task": t, "kind": k, "acc": a, "pgr": None} for t in ("head", "distill")
                                       for k, a in (("none", none), ("lm", lm))]}

    runs = [run(0, 0.80, 0.85), run(1, 0.70, 0.78), run(2, 0.75, 0.78)]
    rows = [{"task": t, "kind": k, "acc": sum(r["rows"][i]["acc"] for r in runs) / 3, "pgr": None}
            for i, (t, k) in enumerate((t, k) for t in ("head", "distill") for k in ("none", "lm"))]
    found = augment_targets(rows, {"head": "lm", "distill": "lm"}, runs)["augment_head_gain"]
    assert found["value"] == pytest.approx(0.16 / 3)
    assert found["interval"] == pytest.approx(seed_interval([0.05, 0.08, 0.03]))


def test_the_suite_runs_it(tmp_path) -> None:
    from fanbu.bench import suite

    assert "unlabeled" in suite.BENCHES and "unlabeled" in suite.RUNNERS
    settings = suite.SuiteSettings(quick=True, out_dir=tmp_path)
    assert suite.command_of("unlabeled", settings, tmp_path / "u.json") == (
        f"fanbu bench unlabeled --quick --work {tmp_path / 'work' / 'unlabeled'} --out {tmp_path / 'u.json'}"
    )
