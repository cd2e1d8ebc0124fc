"""The merge section of bench structure, without models: its tree and its summary."""

from __future__ import annotations

import pytest

from fanbu.bench.structure.merge import levels_of, merge_settings, summarise


def test_the_tree_names_heads_without_dots():
    levels = levels_of(["comp.sys", "comp.sw", "talk.politics"])
    assert levels.groups == {"comp": None, "politics": None}
    assert levels.leaves == {"comp_sys": "comp", "comp_sw": "comp", "talk_politics": "politics"}


def _row(method: str, arrangement: str, a: float, b: float) -> dict:
    return {
        "method": method,
        "arrangement": arrangement,
        "leaf_acc": {"x": a, "y": b},
        "acc_mean": (a + b) / 2,
        "pgr_mean": 0.5,
        "forgetting": 1.0,
    }


def test_by_level_is_compared_with_flat_draw_by_draw():
    draws = [
        {
            "rows": [
                _row("champion", "-", 50, 60),
                _row("ties", "flat", 60, 70),
                _row("ties", "levels", 62, 69),
            ]
        },
        {
            "rows": [
                _row("champion", "-", 50, 60),
                _row("ties", "flat", 58, 70),
                _row("ties", "levels", 60, 71),
            ]
        },
    ]
    report = summarise(draws)
    compared = report["levels_vs_flat"]["ties"]
    assert compared["levels_minus_flat"] == pytest.approx(1.0)  # +0.5 and +1.5 points
    assert compared["worst_leaf"] == pytest.approx(0.0)  # y: 69.5 -> 70 flat vs 70 by level
    assert compared["interval"] is not None and "champion" not in report["levels_vs_flat"]


def test_presets_and_overrides():
    quick, full = merge_settings(True), merge_settings(False, ["seeds=2"])
    assert len(quick.leaves) == 6 and len(full.leaves) == 8 and full.seeds == 2 and full.test is None
