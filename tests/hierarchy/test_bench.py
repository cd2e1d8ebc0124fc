"""The hierarchy section of ``fanbu bench structure``: its targets, and a short run on the packaged MiniLM."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fanbu.bench.stats import seed_interval
from fanbu.bench.structure.hierarchy import (
    HierarchyBenchSettings,
    _row,
    hierarchy_settings,
    print_hierarchy,
    run_hierarchy,
    targets,
)


def test_targets_read_the_mean_and_the_worst_leaf() -> None:
    flat = _row("flat", 8, [{"x": 0.50, "y": 0.70}, {"x": 0.52, "y": 0.72}])
    hier = _row("hierarchical", 8, [{"x": 0.58, "y": 0.695}, {"x": 0.60, "y": 0.715}])
    out = targets([flat, hier, _row("flat", 32, [{"x": 0.9, "y": 0.9}])])
    gain, worst = out["hierarchical_vs_flat_mean_k8"], out["hierarchical_vs_flat_worst_leaf_k8"]
    assert gain["value"] == pytest.approx(3.75) and gain["met"]
    assert worst["value"] == pytest.approx(-0.5) and worst["met"] and "(y)" in worst["rule"]
    assert gain["interval"] == pytest.approx(seed_interval([3.75, 3.75]))  # each seed's own gap
    assert worst["interval"] == pytest.approx(seed_interval([-0.5, -0.5]))
    assert flat["acc_lo"] < flat["acc_mean"] < flat["acc_hi"]
    assert targets([flat]) == {}


def test_settings_reject_unknown_leaves() -> None:
    with pytest.raises(ValueError, match="unknown leaves"):
        HierarchyBenchSettings(leaves=["comp.nope"])
    assert HierarchyBenchSettings.quick().test_per_class == 100


@pytest.mark.integration
def test_short_run_on_minilm(one_thread) -> None:
    settings = HierarchyBenchSettings(
        leaves=["rec.vehicles", "rec.sport"], labels_per_class=[8], seeds=1, test_per_class=6,
        validation_per_class=4,
    )
    report = run_hierarchy(settings, log=lambda _: None)
    methods = [(r["method"], r["labels_per_class"]) for r in report["hierarchy"]]
    assert methods == [("flat", 8), ("hierarchical", 8), ("group_alone", 8)]
    assert all(0.0 <= r["acc_mean"] <= 1.0 for r in report["hierarchy"])
    assert report["tree"] == {"rec": "trunk", "rec.vehicles": "rec", "rec.sport": "rec"}
    assert set(report["target"]) == {"hierarchical_vs_flat_mean_k8", "hierarchical_vs_flat_worst_leaf_k8"}
    json.dumps(report)
    print_hierarchy(report, Console(file=None, width=160, record=True))


def test_presets_and_overrides() -> None:
    quick = hierarchy_settings(True, ["seeds=4", "training.leaves.lr=0.001"])
    assert quick.seeds == 4 and quick.training.leaves.lr == 0.001 and len(quick.leaves) == 6
    assert len(hierarchy_settings(False).leaves) == 8
