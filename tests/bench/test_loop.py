"""``fanbu bench loop`` end to end on tiny models and JSONL domains: the JSON's shape, targets read off the
measured values, decisions on the gate split, the bytes accounting."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import suite
from fanbu.bench.loop import plan as loop_plan
from fanbu.bench.loop import run_bench
from fanbu.bench.loop import step as loop_step
from fanbu.bench.loop.generation import check_traffic
from fanbu.bench.loop.run import average_tree
from fanbu.bench.loop.summary import targets
from fanbu.cli import app
from fanbu.collect.dataset import read_collected
from fanbu.config import validate
from fanbu.cycle.recipe import CycleRecipe
from fanbu.demo.recipe import DemoDerive
from fanbu.errors import ConfigError
from fanbu.feedback.gate.promotion import gate
from fanbu.registry import Registry
from fanbu.train.config import TrainConfig
from tests.report.workspace import DOMAINS, HELDOUT, domain_files, large_v0, quick, small_stages

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
NAMES = ["combined", "data", "distill", "layer_lr", "transplant", "structure"]


def tiny_plan(root: Path):
    """The bench's plan over the tiny JSONL domains: tiny derive stages, one-epoch loops."""

    def plan(quick_mode: bool, seed: int, generations: int | None) -> loop_plan.LoopPlan:
        mechanisms = tuple(_without_selection(m) for m in loop_plan.mechanisms(quick(epochs=1)))
        raw: dict[str, Any] = {
            "max_length": 32,
            "seed": seed,
            "data": {**domain_files(root), "seed": seed},
            "derive": {"stages": [*small_stages(), {"quantize": {"check_texts": 4}}], "max_train": 32},
            "deployment": {
                "traffic_size": 16,
                "corrections": 0.5,
                "escalate_below": 0.9,
                "min_confidence": 0.6,
                "train": quick(epochs=1),
            },
            "experts": {
                "source": "small",
                "derive": {"stages": [{"finetune": {"train": quick(epochs=1)}}], "max_train": 32},
            },
            "strategies": [mechanisms[0].strategy],
            # every candidate passes, so each generation promotes and the next derives from a new champion
            "gate": {"tolerance": 1.0, "require_mean_not_worse": False},
        }
        return loop_plan.LoopPlan(
            recipe=validate(CycleRecipe, raw),
            mechanisms=mechanisms,
            generations=generations or 2,
            large_train=TrainConfig(**quick()),
            large_public=16,
            model="tiny",
        )

    return plan


def _without_selection(mechanism: loop_plan.Mechanism) -> loop_plan.Mechanism:
    """Tiny small models often trail the champion on validation: keep every expert."""
    name, settings = next(iter(mechanism.strategy.items()))
    if name == "swarm_distill":
        settings = {**settings, "selection_tolerance": None}
    elif name == "transplant":
        settings = {**settings, "selection": {"enabled": False}}
    return dataclasses.replace(mechanism, strategy={name: settings})


def _tiny_large(registry: Registry, *_: Any) -> str:
    return large_v0(registry)


def test_the_quick_plan_is_a_valid_cycle_recipe_with_every_mechanism() -> None:
    plan = loop_plan.plan_for(True, 3, None)
    assert [m.name for m in plan.mechanisms] == NAMES and plan.generations == 2
    recipe = plan.recipe
    assert recipe.max_length == 64 and recipe.seed == recipe.data.seed == 3 and recipe.data.domains is None
    assert recipe.deployment.corrections == 0.1 and recipe.deployment.traffic_size == 150
    assert recipe.derive.max_train == 300 and recipe.data.max_test == 200
    assert [next(iter(s)) for s in recipe.derive.stages] == ["prune", "distill", "quantize"]
    assert recipe.derive.stages[0]["prune"]["importance"] == "taylor"
    demo = DemoDerive()  # the loop's small models are the demo's: the same stages and transfer cap
    assert recipe.derive.stages == demo.stages and recipe.derive.max_transfer == demo.max_transfer
    by_name = {m.name: m for m in plan.mechanisms}
    assert by_name["data"].strategy["swarm_distill"]["alpha"] == 0.0  # the teachers' term off
    assert by_name["data"].collected and by_name["combined"].collected and not by_name["distill"].collected
    assert by_name["layer_lr"].strategy["swarm_distill"]["layer_lr"] == "swarm"
    full = loop_plan.plan_for(False, 0, None)
    assert full.generations == 3 and full.recipe.max_length == 128 and full.recipe.data.max_test is None


def test_every_generation_of_the_shipped_plans_gets_fresh_traffic(tmp_path: Path) -> None:
    for quick_mode in (True, False):
        check_traffic(loop_plan.plan_for(quick_mode, 0, None))  # raises when a private slice runs out
    greedy = tiny_plan(tmp_path)(True, 0, 3)  # 32 trained + 3 blocks of 16 > the 72 private texts
    with pytest.raises(ConfigError, match="too few for block 2"):
        check_traffic(greedy)


def _run(root: Path) -> tuple[dict[str, Any], dict[str, Any], list[set[str]]]:
    """The quick bench on the tiny plan under ``root``: what run_bench returned, the JSON it wrote, and the
    texts of every split handed to the gate."""
    handed: list[set[str]] = []

    def recording(candidate: Any, champion: Any, splits: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        handed.append({text for texts, _ in splits.values() for text in texts})
        return gate(candidate, champion, splits, *args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster so on a shared CPU
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop_step, "gate", recording)
            returned = run_bench(
                True,
                root / "loop.json",
                Console(quiet=True),
                work=root / "work",
                plan_fn=tiny_plan(root),
                large_v0=_tiny_large,
            )
    finally:
        torch.set_num_threads(before)
    return returned, json.loads((root / "loop.json").read_text()), handed


Loop = tuple[dict[str, Any], dict[str, Any], Path, list[set[str]]]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    """One run of the whole loop on tiny models, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("loop")
    returned, report, handed = _run(root)
    return returned, report, root, handed


def test_the_loop_on_tiny_models(loop: Loop) -> None:
    returned, report, root, handed = loop
    assert report["bench"] == "loop" and report["seeds"] == [0] and report["quick"]
    assert report["command"].startswith("fanbu bench loop --quick")
    assert returned["target"] == report["target"]

    # --- the JSON's layout
    gens = report["generations"]
    assert [g["generation"] for g in gens] == [1, 2]
    for g in gens:
        assert set(g["large"]) == {*DOMAINS, "heldout"} and set(g["large"]["heldout"]) == set(HELDOUT)
        assert set(g["small"]) == set(DOMAINS)
        assert all({"before_adapt", "after_adapt"} <= set(s) for s in g["small"].values())
        for domain, small in g["small"].items():  # a version validation turned down is still reported
            turned = domain in g["deployment"]["skipped"] and domain in g["deployment"]["adapt_validation"]
            assert ("turned_down" in small) == turned
            assert small["adapted"] == (small["served"] != small["derived"])
        assert [r["name"] for r in g["mechanisms"]] == NAMES
        for row in g["mechanisms"]:
            assert "error" not in row, row
            assert {"pgr_small", "forgetting", "seconds", "bytes_from_domains", "gate", "domains"} <= set(row)
            assert row["decision_split"] == "gate" and row["report_split"] == "test"
        assert "promoted" in g and g["promoted"] == g["champion_out"]  # the loose gate passes everything
        assert g["decision_split"] == "gate" and g["gate_fingerprints"]
        traffic = g["deployment"]["traffic"]["domains"]
        assert all(traffic[d]["answered"] == 16 and traffic[d]["corrected"] >= 1 for d in DOMAINS)
    assert gens[1]["champion_in"] == gens[0]["champion_out"]  # generation 2 starts from the promoted one
    full = report["full_size_swarm"]
    assert {"pgr", "forgetting", "bytes_from_domains"} <= set(full) and full["gate"]["status"].startswith(
        "not"
    )
    assert [m["name"] for m in report["mechanisms"]] == NAMES
    stages = report["runs"][0]["stage_seconds"]
    assert {"large_v0", "g1.derive", "g1.serve_collect_adapt", "g1.feedback", "g1.full_size_swarm"} <= set(
        stages
    )

    # --- the targets are read off the measured values
    target, mean = report["target"], report["mean"]
    gains = [s["after_adapt"] - s["before_adapt"] for g in gens for s in g["small"].values()]
    assert target["small_adapt_gain"]["value"] == pytest.approx(statistics.fmean(gains))
    assert target["small_adapt_gain"]["met"] == (statistics.fmean(gains) >= 0.02)
    chosen = [next(r for r in g["mechanisms"] if r["model"] == g["promoted"]) for g in gens]
    pgrs = [r["pgr_small"] for r in chosen if r["pgr_small"] is not None]
    if pgrs:
        assert target["best_pgr_small"]["value"] == pytest.approx(statistics.fmean(pgrs))
    transplant = [r for g in gens for r in g["mechanisms"] if r["name"] == "transplant"]
    if all(r["pgr_small"] is not None for r in transplant):
        assert target["transplant_pgr"]["value"] == pytest.approx(
            statistics.fmean(r["pgr_small"] for r in transplant)
        )
    combined = statistics.fmean(
        r["bytes_from_domains"] for g in gens for r in g["mechanisms"] if r["name"] == "combined"
    )
    assert target["bytes_ratio"]["value"] == pytest.approx(combined / full["bytes_from_domains"])
    assert target["bytes_ratio"]["met"] == (combined / full["bytes_from_domains"] <= 1 / 20)
    means = [statistics.fmean(g["large"][d] for d in DOMAINS) for g in gens]
    assert target["compounding"]["value"] == pytest.approx(means[1] - means[0])
    assert (
        target["quick_seconds"]["value"] == pytest.approx(mean["seconds"])
        and target["quick_seconds"]["bar"] == 1800
    )
    assert target["met"] == all(p["met"] for k, p in target.items() if k != "met")

    # --- the bytes accounting: positive everywhere, the small swarm's below the full-size swarm's
    for g in gens:
        rows = {r["name"]: r for r in g["mechanisms"]}
        collected = g["deployment"]["collected_bytes"]
        assert collected > 0 and all(r["bytes_from_domains"] > 0 for r in rows.values())
        assert rows["data"]["bytes"] == {"collected": collected}  # no teacher output travels
        assert rows["combined"]["bytes"]["logits"] > 0 and rows["combined"]["bytes"]["collected"] == collected
        assert rows["layer_lr"]["bytes"]["importances"] > 0
        assert set(rows["transplant"]["bytes"]) == {"weights"} and set(rows["structure"]["bytes"]) == {
            "indices"
        }
        assert "collected" not in rows["distill"]["bytes"]
        assert rows["combined"]["bytes_from_domains"] < full["bytes_from_domains"]
    assert full["bytes"]["weights"] > max(r["bytes"]["weights"] for r in transplant)

    # --- no decision reads the test split; traffic is never a test text, a fresh block each generation
    registry = Registry.open(Path(report["runs"][0]["registry"]))
    try:
        for g in gens:
            feedback = next(r for r in registry.list_runs() if r.id == g["feedback_run"])
            assert feedback.summary["decision_split"] == "gate" and feedback.status == "succeeded"
            for row in g["mechanisms"]:
                splits = {e.split for e in registry.evaluations(row["model"], domain="*")}
                splits |= {
                    e.split
                    for d in (*DOMAINS, *HELDOUT)
                    for e in registry.evaluations(row["model"], domain=d)
                }
                assert {"gate", "test"} <= splits
        tests = {
            json.loads(line)["text"]
            for t in (*DOMAINS, *HELDOUT)
            for line in (root / f"{t}.test.jsonl").open()
        }
        served = []
        for g in gens:
            data = read_collected(registry, g["deployment"]["collected"]["dataset"])
            texts = {t for texts, _ in data.labeled.values() for t in texts} | {
                t for texts in data.unlabeled.values() for t in texts
            }
            assert texts and not texts & tests
            served.append(texts)
        # every decision was handed gate splits only: one gate call per candidate, never a test text
        assert len(handed) == sum(len(g["mechanisms"]) for g in gens) + 1  # + the full-size swarm
        assert all(texts and not texts & tests for texts in handed)
        assert not served[0] & served[1]
        small = registry.get_model(gens[1]["small"][DOMAINS[0]]["derived"])
        assert gens[1]["champion_in"] in {p for p in _ancestors(registry, small.id)}  # re-derived from it
    finally:
        registry.close()


def _ancestors(registry: Registry, model: str) -> set[str]:
    seen, todo = set(), [model]
    while todo:
        for parent in registry.get_model(todo.pop()).parents:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _figures(**overrides: float) -> dict[str, float]:
    base = {
        "small_adapt_gain": 0.03,
        "best.pgr_small": 0.95,
        "best.forgetting": 0.5,
        "transplant.pgr_small": 0.4,
        "transplant.gate_passed": 1.0,
        "layer_lr.pgr_delta": 0.01,
        "structure.pgr_delta": -0.2,
        "structure.gate_passed": 0.0,
        "structure.params_ratio": 0.8,
        "compounding.large_delta": 0.01,
        "compounding.small_delta": 0.0,
        "g1.large.heldout.mood": 0.9,
        "g2.large.heldout.mood": 0.895,
        "bytes_ratio": 0.01,
        "seconds": 1700.0,
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("change", "short"),
    [
        ({}, None),
        ({"small_adapt_gain": 0.019}, "small_adapt_gain"),
        ({"best.forgetting": 1.2}, "best_pgr_small"),
        ({"best.pgr_small": 0.89}, "best_pgr_small"),
        ({"transplant.gate_passed": 0.5}, "transplant_pgr"),
        ({"layer_lr.pgr_delta": 0.0}, "optimisation_helps"),
        ({"g2.large.heldout.mood": 0.88}, "compounding"),
        ({"compounding.small_delta": -0.01}, "compounding"),
        ({"bytes_ratio": 0.06}, "bytes_ratio"),
        ({"seconds": 1801.0}, "quick_seconds"),
    ],
)
def test_each_target_follows_its_figure(change: dict[str, float], short: str | None) -> None:
    found = targets(_figures(**change), {}, [{"optimisation": {}}], quick=True)
    missed = [k for k, p in found.items() if k != "met" and not p["met"]]
    assert missed == ([] if short is None else [short])
    assert found["met"] == (short is None)
    cheaper = targets(
        _figures(**{"layer_lr.pgr_delta": -0.1, "structure.gate_passed": 1.0}), {}, [{}], quick=False
    )
    assert cheaper["optimisation_helps"]["met"] and "quick_seconds" not in cheaper  # structure: fewer params


def test_draws_merge_numbers_as_means_and_keep_what_differs_per_draw() -> None:
    merged = average_tree(
        [{"a": 1.0, "b": [1, 2], "id": "x", "ok": True}, {"a": 3.0, "b": [3, 4], "id": "y", "ok": True}]
    )
    assert merged == {"a": 2.0, "b": [2.0, 3.0], "id": ["x", "y"], "ok": True}


def test_the_cli_and_the_suite_know_the_loop_bench(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "loop", "--help"])
    assert result.exit_code == 0 and "--seeds" in result.output and "--quick" in result.output
    assert "loop" in suite.BENCHES and "loop" in suite.RUNNERS
    settings = suite.SuiteSettings(quick=True, out_dir=tmp_path)
    assert (
        suite.command_of("loop", settings, tmp_path / "loop.json")
        == f"fanbu bench loop --quick --work {tmp_path}/work/loop --out {tmp_path}/loop.json"
    )
