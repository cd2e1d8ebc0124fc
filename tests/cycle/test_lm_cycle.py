"""``fanbu cycle`` with ``task: causal_lm`` on tiny Llamas: two generations end to end, resumed, refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fanbu.cycle.dispatch import run_any_cycle
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.cycle.lm_run import lm_benchmark, private_pool
from fanbu.cycle.recipe import CycleRecipe, load_cycle_recipe
from fanbu.errors import ConfigError
from fanbu.models import EncoderHandle
from fanbu.models.artefact import Provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
STEPS = {"epochs": 100, "max_steps": 2, "batch_size": 4, "lr": 0.01, "progress": False, "threads": 1}
FAST = {
    "epochs": 1,
    "batch_size": 4,
    "lr": 3e-3,
    "progress": False,
    "threads": 1,
    "metric": "score",
    "mode": "max",
}


def lm_cycle(**changes: Any) -> dict[str, Any]:
    """A two-generation LM cycle on one BBC category, tiny budgets, a lenient gate."""
    recipe: dict[str, Any] = {
        "task": "causal_lm",
        "champion": "tiny-lm",
        "max_length": 64,
        "generations": 2,
        "lm": {
            "data": {
                "domains": ["bbc-tech"],
                "max_docs": 30,
                "max_test": 4,
                "max_heldout": 4,
                "max_general": 8,
            },
            "gate": {"tolerance": 10.0, "prompt_tolerance": 50.0, "require_mean_not_worse": False},
        },
        "derive": {
            "max_train": 6,
            "max_validation": 4,
            "max_test": 4,
            "stages": [
                {"prune": {"layers": 1, "ffn": 0.5, "importance": "minitron", "calibration": 8}},
                {"distill": {"top_k": 16, "window": 16, "train": FAST}},
            ],
        },
        "deployment": {
            "traffic_size": 3,
            "prompt_words": 6,
            "continuation_words": 4,
            "max_tokens": 4,
            "ratings": 0.3,
            "corrections": 0.7,
        },
        "strategies": [{"lm_distill": {"train": STEPS}}, {"lm_corrections": {"train": STEPS}}],
    }
    recipe.update(changes)
    return recipe


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry.open(tmp_path / "home")
    champion = CausalLMHandle.tiny(seed=0, max_length=64)
    Workspace(reg).save_and_register(champion, Provenance(), name="tiny-lm", status="champion")
    return reg


def test_two_lm_generations_register_their_lineage_and_resume(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "lm-cycle.yaml"
    path.write_text(yaml.safe_dump(lm_cycle()))
    recipe = load_cycle_recipe(path)
    assert isinstance(recipe, LMCycleRecipe)
    summaries = run_any_cycle(recipe, registry)
    assert [s["generation"] for s in summaries] == [0, 1]
    assert summaries[0]["champion_in"] == "tiny-lm:v0"
    assert summaries[1]["champion_in"] == summaries[0]["champion_out"] == summaries[0]["promoted"]
    for summary in summaries:
        champion_in = summary["champion_in"]
        small = registry.get_model(summary["small"]["bbc-tech"])
        assert small.name == "bbc-tech.distill"
        [pruned] = small.parents
        assert registry.get_model(pruned).parents == (champion_in,)  # the small LM comes from this champion
        traffic = summary["deployment"]["traffic"]["domains"]["bbc-tech"]
        assert traffic["answered"] == 3 and traffic["models"] == {small.id: 3}
        counts = summary["deployment"]["collected"]["counts"]
        assert counts["logged"] == 3 and counts["tiers"]["corrected"] == traffic["corrected"]
        rows = {row["name"]: row for row in summary["strategies"]}
        assert set(rows) == {"lm_distill", "lm_corrections"}
        for row in rows.values():
            assert set(registry.get_model(row["model"]).parents) == {champion_in, small.id}
        passed = [row["model"] for row in rows.values() if row["gate"]["passed"]]
        assert summary["promoted"] in passed  # the lenient gate passes, and the best that passed is promoted
        assert registry.get_model(summary["promoted"]).parents[0] == champion_in
    assert registry.latest("tiny-lm", status="champion").id == summaries[-1]["champion_out"]
    assert registry.get_model("tiny-lm:v0").status == "archived"
    models, runs = len(registry.list_models()), len(registry.list_runs())
    again = run_any_cycle(load_cycle_recipe(path), registry)  # a rerun redoes no finished generation
    assert [s["skipped"] for s in again] == [True, True]
    assert len(registry.list_models()) == models and len(registry.list_runs()) == runs


def test_a_failed_gate_keeps_the_champion_and_stops(registry: Registry) -> None:
    wrecking = {"mode": "full", "train": {**STEPS, "lr": 1.0}}  # Adam steps of 1.0 ruin every weight
    raw = lm_cycle(strategies=[{"lm_distill": wrecking}], deployment={"enabled": False}, feed_collected=False)
    raw["lm"]["gate"] = {"tolerance": 0.0, "prompt_tolerance": 0.0}
    summaries = run_any_cycle(LMCycleRecipe.model_validate(raw), registry)
    [summary] = summaries  # on_no_promotion: stop
    assert summary["promoted"] is None and summary["champion_out"] == "tiny-lm:v0"
    assert summary["deployment"] is None and not summary["strategies"][0]["gate"]["passed"]
    assert registry.get_model(summary["strategies"][0]["model"]).status == "rejected"
    assert registry.latest("tiny-lm", status="champion").id == "tiny-lm:v0"


def test_lm_cycle_refuses_classification_domains(registry: Registry) -> None:
    raw = lm_cycle()
    raw["lm"]["data"] = {"source": "bbc-news", "max_docs": 30}
    with pytest.raises(ConfigError, match=r"lm\.data: .* classification domains"):
        run_any_cycle(LMCycleRecipe.model_validate(raw), registry)
    assert registry.list_runs() == []


def test_classification_cycle_refuses_an_lm_champion(registry: Registry) -> None:
    recipe = CycleRecipe.model_validate({"champion": "tiny-lm", "deployment": {"enabled": False}})
    with pytest.raises(ConfigError, match="champion: tiny-lm:v0 is a causal LM.*task: causal_lm"):
        run_any_cycle(recipe, registry)


def test_lm_cycle_with_a_classification_champion_is_refused(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "home")
    encoder = EncoderHandle.tiny(seed=0)
    encoder.add_head("topic", ["a", "b"])
    Workspace(registry).save_and_register(encoder, Provenance(), name="large", status="champion")
    with pytest.raises(ConfigError, match="champion: large:v0 is not a causal LM.*task: causal_lm"):
        run_any_cycle(LMCycleRecipe.model_validate(lm_cycle(champion="large")), registry)


def test_recipe_dispatch_and_checks(tmp_path: Path) -> None:
    for name, kind in (("lm-cycle.yaml", LMCycleRecipe), ("cycle.yaml", CycleRecipe)):
        assert isinstance(load_cycle_recipe(ROOT / "recipes" / name), kind)
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"task": "rl"}))
    with pytest.raises(ConfigError, match="task 'rl'"):
        load_cycle_recipe(bad)
    with pytest.raises(ValueError, match="lm_merge merges LoRA experts.*experts: lora"):
        LMCycleRecipe.model_validate(lm_cycle(strategies=[{"lm_merge": {}}]))
    with pytest.raises(ValueError, match="lm_corrections trains on corrections"):
        LMCycleRecipe.model_validate(lm_cycle(feed_collected=False))
    with pytest.raises(ValueError, match="feed back classifiers"):
        LMCycleRecipe.model_validate(lm_cycle(strategies=[{"swarm_distill": {}}]))
    with pytest.raises(ValueError, match="exceed 1"):
        LMCycleRecipe.model_validate(lm_cycle(deployment={"ratings": 0.6, "corrections": 0.6}))


def test_traffic_and_small_lms_skip_what_lora_experts_train_on() -> None:
    recipe = LMCycleRecipe.model_validate(lm_cycle(experts="lora"))
    with pytest.raises(ConfigError, match="lm.experts.max_train"):
        private_pool(recipe, lm_benchmark(recipe), "bbc-tech")
    raw = lm_cycle(experts="lora")
    raw["lm"]["experts"] = {"max_train": 4}
    recipe = LMCycleRecipe.model_validate(raw)
    bench = lm_benchmark(recipe)
    private = bench.private("bbc-tech").texts
    assert private_pool(recipe, bench, "bbc-tech").texts == private[4:]
