"""The derive bench's recipe is valid in both modes and reads heads and tails of 256-token posts."""

from __future__ import annotations

import io

from rich.console import Console

from fanbu.bench.derive import bench_recipe, print_table
from fanbu.derive.stages import parse_stages


def test_bench_recipes_validate_and_quick_caps_the_data() -> None:
    quick, full = bench_recipe(True), bench_recipe(False)
    for recipe in (quick, full):
        assert [name for name, _ in parse_stages(recipe.stages)] == ["finetune", "prune", "distill", "quantize"]
        assert (recipe.max_length, recipe.truncation) == (256, "head_tail")
    assert quick.data.max_train == 600 and full.data.max_train is None
    assert quick.data.max_transfer == 600 and full.data.max_transfer is None


def test_table_prints_every_domain_and_the_mean() -> None:
    keys = ("teacher_acc", "student_acc", "retention", "param_ratio", "speedup_b1", "speedup_b32",
            "scratch_acc", "tfidf_acc")
    rows = [{"name": n, **{k: float(i) for k in keys}} for i, n in enumerate(["comp", "rec"])]
    report = {"quick": True, "seconds": 1.0, "domains": rows, "mean": {k: 0.5 for k in keys}}
    out = io.StringIO()
    print_table(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "comp" in text and "rec" in text and "mean" in text and "0.500" in text
