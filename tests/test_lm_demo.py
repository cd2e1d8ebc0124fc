"""``fanbu demo --lm``: its recipe file is its defaults, and one tiny generation runs and prints its table."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from rich.console import Console

from fanbu.config import load_recipe
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.demo.lm import LM_DEMO, load_lm_demo, run_lm_demo
from fanbu.models.artefact import Provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from tests.cycle.test_lm_cycle import STEPS, lm_cycle

ROOT = Path(__file__).resolve().parents[1]


def test_the_recipe_file_writes_out_the_defaults() -> None:
    shipped = load_recipe(LMCycleRecipe, ROOT / "recipes" / "lm-demo.yaml")
    assert shipped == load_lm_demo()
    assert shipped.champion == "package:SmolLM2-135M-Instruct" and shipped.lm.champion_name == "large-lm"
    assert (
        shipped.generations == 1 and len(shipped.strategies) == 1 and shipped.lm.data.domains == ["bbc-tech"]
    )
    assert load_lm_demo(None, ["deployment.traffic_size=2"]).deployment.traffic_size == 2


def test_tiny_lm_demo_derives_serves_feeds_back_and_prints(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "home")
    Workspace(registry).save_and_register(
        CausalLMHandle.tiny(seed=0, max_length=64), Provenance(), name="tiny-lm", status="champion"
    )
    tiny = lm_cycle(generations=1, strategies=[{"lm_distill": {"train": STEPS}}])
    raw = {
        **copy.deepcopy(LM_DEMO),
        **{k: tiny[k] for k in ("champion", "max_length", "derive", "deployment")},
    }
    raw["lm"] = {**tiny["lm"], "champion_name": "tiny-lm"}
    raw["strategies"] = tiny["strategies"]
    path = tmp_path / "lm-demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    console = Console(record=True, width=200)
    summary = run_lm_demo(load_lm_demo(path), registry, console)
    text = console.export_text()
    assert "fanbu demo --lm" in text and "served (bbc-tech)" in text and "fed back (lm_distill)" in text
    small = registry.get_model(summary["small"]["bbc-tech"])
    assert registry.ancestors(small.id)[-1].id == "tiny-lm:v0"
    [row] = summary["strategies"]
    assert set(registry.get_model(row["model"]).parents) == {"tiny-lm:v0", small.id}
    assert summary["champion_out"] == registry.latest("tiny-lm", status="champion").id
    assert (summary["promoted"] is not None) == row["gate"]["passed"]
