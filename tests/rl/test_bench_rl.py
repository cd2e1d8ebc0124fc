"""``fanbu bench rl`` end to end on a smoke setting, the rl recipe, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import suite
from fanbu.bench.rl import run_bench
from fanbu.bench.rl.plan import bench_recipe
from fanbu.cli import app
from fanbu.errors import ConfigError
from fanbu.recipes import validate_file
from fanbu.registry import Registry
from fanbu.rl.recipe import RLRecipe

#: Every stage of the bench, a few steps each: proves the plumbing, not the numbers.
SMOKE = ["ppo.total_steps=64", "ppo.n_envs=1", "ppo.n_steps=32", "ppo.batch_size=32", "ppo.n_epochs=1",
         "ppo.policy.hidden=[8]", "general.hidden=[8]", "distill.rounds=1", "distill.steps_per_variant=40",
         "distill.train.epochs=1", "reptile.iterations=1", "reptile.inner_steps=32", "reptile.meta_batch=1",
         "adaptation.max_steps=64", "adaptation.eval_every=32", "adaptation.eval_episodes=1", "gate.episodes=1",
         "episodes=2"]


def test_bench_rl_smoke_writes_every_row_and_target(tmp_path: Path) -> None:
    out = tmp_path / "rl.json"
    report = run_bench(True, out, Console(quiet=True), seeds=1, families=["cartpole"], overrides=SMOKE,
                       home=tmp_path / "home", workers=1)
    assert json.loads(out.read_text())["command"] == report["command"]
    assert report["command"].startswith("fanbu bench rl --quick --seeds 1 --family cartpole --set ppo.total_steps=64")
    assert [r["variant"] for r in report["experts"]] == [
        "cartpole-short-pole", "cartpole-long-pole", "cartpole-heavy", "cartpole-low-gravity"]
    assert all(r["return"] > 0 for r in report["experts"])
    assert {(r["method"], r["variant"]) for r in report["general"]} == {
        (m, r["variant"]) for m in ("distill", "multi_ppo", "average") for r in report["experts"]}
    assert {(r["init"], r["variant"]) for r in report["adapt"]} == {
        (i, v) for i in ("meta", "distilled", "scratch") for v in ("cartpole-high-gravity-long", "cartpole-light-cart")}
    assert all(0 <= r["steps_to_90pct"] <= 64 or r["reached_share"] == 0 for r in report["adapt"])
    assert {"distill_min_ratio", "distill_vs_multi_ppo", "meta_vs_scratch", "meta_vs_distilled",
            "quick_seconds"} <= set(report["target"])
    assert all({"value", "bar", "met"} <= set(t) for t in report["target"].values())
    draw = report["draws"][0]
    assert draw["env_steps"]["multi_ppo"] >= draw["env_steps"]["experts"]  # the baseline's equal budget
    assert set(draw["gate"]) == {"distill", "average"}
    registry = Registry.open(tmp_path / "home")
    try:
        general = registry.list_models(name="cartpole-seed0.general")
        assert len(general) == 3 and sum(m.status == "champion" for m in general) == 1
        distilled = next(m for m in general if m.relation == "distilled")
        assert len(distilled.parents) == 4  # the four experts
        assert registry.latest("cartpole-seed0.meta") is not None
    finally:
        registry.close()


def test_draws_run_in_worker_processes(tmp_path: Path) -> None:
    report = run_bench(True, tmp_path / "rl.json", Console(quiet=True), seeds=2, families=["cartpole"],
                       overrides=[*SMOKE, "adaptation.max_steps=32"], home=tmp_path / "home", workers=2)
    assert report["workers"] == 2 and [d["seed"] for d in report["draws"]] == [0, 1]
    assert all(r["n"] == 2 for r in report["general"])  # every row a mean over both seeds
    registry = Registry.open(tmp_path / "home")
    try:
        assert {m.name for m in registry.list_models(status="champion")} == {"cartpole-seed0.general",
                                                                             "cartpole-seed1.general"}
    finally:
        registry.close()


def test_bench_recipes_and_overrides() -> None:
    quick, full = bench_recipe("acrobot", True), bench_recipe("acrobot", False)
    assert quick.family_spec().env_id == "Acrobot-v1" and quick.ppo.total_steps < full.ppo.total_steps
    assert bench_recipe("cartpole", True, ["ppo.total_steps=5"]).ppo.total_steps == 5
    with pytest.raises(ConfigError, match="family 'pendulum' is not built in"):
        bench_recipe("pendulum", True)
    with pytest.raises(ConfigError, match="ppo.totl_steps: unknown key"):
        bench_recipe("cartpole", True, ["ppo.totl_steps=5"])


def test_the_shipped_recipe_validates_as_rl() -> None:
    recipe = validate_file(Path(__file__).resolve().parents[2] / "recipes" / "rl.yaml")
    assert isinstance(recipe, RLRecipe) and recipe.family_spec().name == "cartpole"


def test_cli_trains_experts_and_knows_the_bench(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "rl.yaml"
    runner = CliRunner()
    args = ["rl", "train-experts", str(recipe), *SMOKE[:6], "episodes=1", "--home", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "env steps" in result.output
    registry = Registry.open(tmp_path)
    try:
        assert [m.id for m in registry.list_models()] == [
            f"{v}.expert:v0" for v in ("cartpole-short-pole", "cartpole-long-pole", "cartpole-heavy",
                                       "cartpole-low-gravity")]
        assert [r.kind for r in registry.list_runs()] == ["rl-experts"]
    finally:
        registry.close()
    fed = runner.invoke(app, ["rl", "feedback", str(recipe), *SMOKE, "--home", str(tmp_path)])
    assert fed.exit_code == 0, fed.output
    adapted = runner.invoke(app, ["rl", "adapt", str(recipe), *SMOKE, "--variant", "cartpole-light-cart",
                                  "--home", str(tmp_path)])
    assert adapted.exit_code == 0, adapted.output
    registry = Registry.open(tmp_path)
    try:
        champion = registry.latest("cartpole.general", status="champion")
        assert champion is not None
        assert registry.latest("cartpole-light-cart.adapted").parents == (champion.id,)
    finally:
        registry.close()
    bad = runner.invoke(app, ["rl", "train-experts", str(recipe), "family=pendulum", "--home", str(tmp_path)])
    assert bad.exit_code == 2 and "family: Value error, family 'pendulum' is not built in" in " ".join(
        bad.output.split())
    help_text = runner.invoke(app, ["bench", "rl", "--help"]).output
    assert "--quick" in help_text and "--seeds" in help_text
    assert "rl" in suite.BENCHES and "rl" in suite.RUNNERS


def _draw(seed: int, distill: float, multi: float, meta: int, scratch: int, distilled: int) -> dict:
    """One family's draw with one training and one held-out variant."""
    return {"family": "cartpole", "seed": seed, "experts": [{"variant": "a", "return": 500.0}],
            "general": [{"method": m, "variant": "a", "return": 500.0 * r, "ratio_to_expert": r}
                        for m, r in (("distill", distill), ("multi_ppo", multi))],
            "adapt": [{"init": i, "variant": "b", "steps_to_90pct": s, "reached": True}
                      for i, s in (("meta", meta), ("scratch", scratch), ("distilled", distilled))]}


def test_rl_targets_carry_their_interval_over_seeds() -> None:
    from fanbu.bench.rl.report import summarise, targets
    from fanbu.bench.stats import ratio_interval, seed_interval

    draws = [_draw(0, 0.9, 0.8, 100, 1000, 200), _draw(1, 1.0, 0.95, 300, 1000, 300),
             _draw(2, 0.95, 0.9, 200, 2000, 0)]
    rows = summarise(draws, {"cartpole": 5000})
    found = targets(rows, 10.0, True, 1800, draws, {"cartpole": 5000})
    assert found["distill_vs_multi_ppo"]["value"] == pytest.approx(0.2 / 3)
    assert found["distill_vs_multi_ppo"]["interval"] == pytest.approx(seed_interval([0.1, 0.05, 0.05]))
    assert found["distill_min_ratio"]["interval"] == pytest.approx(seed_interval([0.9, 1.0, 0.95]))
    assert found["meta_vs_scratch"]["value"] == pytest.approx(600 / 4000)
    # Fieller's interval for the ratio of the seeds' mean steps, around the value
    interval = found["meta_vs_scratch"]["interval"]
    assert interval == pytest.approx(ratio_interval([100, 300, 200], [1000, 1000, 2000]))
    assert interval[0] < 600 / 4000 < interval[1]
    # the distilled starts' steps (200, 300, 0) do not tell their mean from zero: unbounded, so none
    assert found["meta_vs_distilled"]["interval"] is None
    assert "interval" not in found["quick_seconds"]
    assert "interval" not in targets(rows, 10.0, True, 1800)["meta_vs_scratch"]  # without the draws, none
