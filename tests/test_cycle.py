"""``fanbu cycle``: generations of derive -> experts -> feed back -> gate on tiny models, resumable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import fanbu.cycle.run as cycle_run
from fanbu.cli import app
from fanbu.config import validate
from fanbu.cycle import CycleRecipe, run_cycle
from fanbu.errors import ConfigError
from fanbu.recipes import validate_file
from fanbu.registry import Registry
from fanbu.report import build_report
from tests.report.workspace import DOMAINS, domain_files, large_v0, quick, small_stages

ROOT = Path(__file__).resolve().parents[1]
SMALL = small_stages()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[tuple[Registry, dict[str, Any]]]:
    """A registry with the tiny large v0 as champion, and a cycle recipe over JSONL domains."""
    registry = Registry.open(tmp_path / "home")
    large_v0(registry)
    recipe = {
        "max_length": 32,
        "data": domain_files(tmp_path),
        "derive": {"stages": SMALL},
        "deployment": {"enabled": False},
        "experts": {"source": "finetune", "derive": {"stages": [{"finetune": {"train": quick(epochs=2)}}]}},
        "strategies": [{"merge": {"method": "average", "selection": {"enabled": False}}}],
        # Every candidate passes the gate, so the lineage of each generation is known in advance.
        "gate": {"tolerance": 1.0, "require_mean_not_worse": False},
    }
    yield registry, recipe
    registry.close()


def test_shipped_recipe_validates_and_bad_ones_name_the_field() -> None:
    recipe = validate_file(ROOT / "recipes" / "cycle.yaml")
    assert isinstance(recipe, CycleRecipe) and recipe.generations == 2
    assert recipe.feedback_recipe("large:v3", 1).seed == recipe.seed + 1
    assert recipe.experts.source == "small" and recipe.deployment.enabled  # the small models are the swarm
    default = CycleRecipe()
    assert default.experts.source == "small" and default.same_architecture_strategies() == []
    with pytest.raises(ConfigError, match="need experts shaped like the champion"):
        validate(CycleRecipe, {"experts": {"source": "small"}, "strategies": [{"merge": {}}]})
    # without derive there is nothing to serve: the deployment steps are skipped, not an error
    assert validate(CycleRecipe, {"derive": {"enabled": False}, "experts": {"source": "finetune"}}).deployment.enabled
    with pytest.raises(ConfigError, match="derive.enabled is false"):
        validate(
            CycleRecipe,
            {
                "experts": {"source": "small"},
                "derive": {"enabled": False},
                "deployment": {"enabled": False},
                "strategies": [{"swarm_distill": {}}],
            },
        )
    with pytest.raises(ConfigError, match=r"strategies\.0: unknown feedback strategy"):
        validate(CycleRecipe, {"strategies": [{"blend": {}}]})
    with pytest.raises(ConfigError, match=r"derive\.stages"):
        validate(CycleRecipe, {"derive": {"stages": [{"shrink": {}}]}})


def test_two_generations_lineage_rerun_and_report(workspace, tmp_path) -> None:
    registry, recipe = workspace
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(recipe))
    args = ["cycle", str(path), "--generations", "2", "--home", str(registry.home)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "generation 0: candidates from large:v0" in result.output
    assert "generation 1: candidates from large:v1" in result.output
    assert "champion: large:v2" in result.output

    # Every model descends from the champion of its generation.
    assert registry.latest("large", status="champion").id == "large:v2"
    for generation, champion in enumerate(("large:v0", "large:v1")):
        for domain in DOMAINS:
            prune = registry.get_model(f"{domain}.prune:v{generation}")
            distill = registry.get_model(f"{domain}.distill:v{generation}")
            expert = registry.get_model(f"{domain}.finetune:v{generation}")
            assert prune.parents == (champion,) and prune.relation == "pruned"
            assert distill.parents == (prune.id,) and distill.relation == "distilled"
            assert expert.parents == (champion,) and expert.relation == "finetune"
        candidate = registry.get_model(f"large:v{generation + 1}")
        assert set(candidate.parents) == {champion, *(f"{d}.finetune:v{generation}" for d in DOMAINS)}
        assert candidate.relation == "merge"
    assert registry.get_model("large:v0").status == registry.get_model("large:v1").status == "archived"
    names = {m.id for m in registry.list_models()}
    assert len(names) == 3 + 2 * 3 * len(DOMAINS)  # large v0-v2; per generation: prune, distill, expert
    cycle_runs = [r for r in registry.list_runs() if r.kind == "cycle"]
    assert [(r.status, r.summary["generation"]) for r in cycle_runs] == [("succeeded", 0), ("succeeded", 1)]
    # both generations decided on the same gate splits: the second counts one reuse
    assert [r.summary["gate_reuse"] for r in cycle_runs] == [0, 1]
    assert cycle_runs[0].summary["gate_fingerprints"] == cycle_runs[1].summary["gate_fingerprints"]

    # Running it again redoes nothing; asking for a third generation runs only that one.
    runs = len(registry.list_runs())
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("not redone") == 2 and len(registry.list_runs()) == runs
    assert {m.id for m in registry.list_models()} == names
    summaries = run_cycle(CycleRecipe.model_validate(recipe), registry, 3)
    assert [s.get("skipped", False) for s in summaries] == [True, True, False]
    assert summaries[2]["champion_in"] == "large:v2" and summaries[2]["promoted"] == "large:v3"
    assert summaries[2]["gate_reuse"] == 2
    assert registry.get_model("tech.prune:v2").parents == ("large:v2",)

    # The report covers every generation.
    page = build_report(registry)
    for anchor in ("fig-lineage", "fig-accuracy", "fig-size"):
        assert f'id="{anchor}"' in page
    assert page.count("<svg") == 3 and "http" not in page
    assert all(model.id in page for model in registry.list_models())
    assert re.search(r"generation 2, feedback run \w+: champion large:v2", page)


def _fake_feedback(calls: list) -> Any:
    def run_feedback(recipe, registry):
        calls.append(recipe)
        experts = recipe.experts.models or {d: f"{d}.finetune:v0" for d in DOMAINS}
        return {
            "run": f"fb{len(calls)}",
            "champion": recipe.champion,
            "promoted": None,
            "experts": experts,
            "strategies": [],
        }

    return run_feedback


def test_no_promotion_stops_and_a_rerun_can_continue_with_the_same_swarm(workspace, monkeypatch) -> None:
    registry, recipe = workspace
    calls: list = []
    monkeypatch.setattr(cycle_run, "run_feedback", _fake_feedback(calls))
    base = {**recipe, "derive": {"enabled": False}}
    stop = CycleRecipe.model_validate({**base, "on_no_promotion": "stop"})
    summaries = run_cycle(stop, registry, 3)
    assert len(summaries) == 1 and len(calls) == 1
    assert summaries[0]["promoted"] is None and summaries[0]["champion_out"] == "large:v0"
    assert len(run_cycle(stop, registry, 3)) == 1 and len(calls) == 1  # stopped again, nothing redone
    go_on = CycleRecipe.model_validate({**base, "on_no_promotion": "continue"})
    summaries = run_cycle(go_on, registry, 3)
    assert [s.get("skipped", False) for s in summaries] == [True, False, False]
    assert [s["champion_in"] for s in summaries] == ["large:v0"] * 3
    assert [c.experts.source for c in calls] == ["derive", "registry", "registry"]  # the swarm is reused
    assert calls[2].experts.models == {d: f"{d}.finetune:v0" for d in DOMAINS}
    assert [c.seed for c in calls] == [0, 1, 2]


def test_missing_champion_says_to_run_the_demo(tmp_path) -> None:
    registry = Registry.open(tmp_path / "empty")
    with pytest.raises(ConfigError, match="run `fanbu demo` first"):
        run_cycle(CycleRecipe(), registry)
    registry.close()


def test_a_generation_serves_collects_adapts_and_feeds_back_from_the_small_models(workspace) -> None:
    registry, base = workspace
    recipe = {
        **base,
        "derive": {"stages": [*SMALL, {"quantize": {"check_texts": 4}}], "max_train": 32},
        "deployment": {
            "traffic_size": 24,
            "corrections": 0.5,
            "escalate_below": 0.9,
            "min_confidence": 0.6,
            "train": quick(epochs=1),
        },
        "experts": {"source": "small"},
        "strategies": [{"swarm_distill": {"selection_tolerance": None, "train": quick(epochs=1)}}],
    }
    (summary,) = run_cycle(CycleRecipe.model_validate(recipe), registry, 1)
    deployment = summary["deployment"]
    traffic = deployment["traffic"]["domains"]
    assert {d: t["answered"] for d, t in traffic.items()} == {d: 24 for d in DOMAINS}
    assert all(t["corrected"] >= 1 for t in traffic.values())  # users corrected some answers
    counts = deployment["collected"]["counts"]["domains"]
    assert all(counts[d]["human"] == traffic[d]["corrected"] for d in DOMAINS)
    dataset = deployment["collected"]["dataset"]
    for domain in DOMAINS:
        derived, version = f"{domain}.quantize:v0", f"{domain}.quantize:v1"
        assert summary["small"][domain] == derived
        record = registry.get_model(version)  # adapted, whether or not validation let it serve
        assert record.parents == (derived,)
        assert dataset in {d.id for d in registry.model_datasets(version)}
        accuracy = deployment["adapt"][domain]["validation_accuracy"]
        serving = deployment["adapted"][domain]
        assert serving == (version if accuracy["after"] >= accuracy["before"] else derived)
        assert (domain in deployment["skipped"]) == (serving == derived)
    # the adapted small models are the swarm, and the collected dataset joined the feedback data
    assert summary["experts"] == deployment["adapted"]
    candidate = registry.get_model(summary["strategies"][0]["model"])
    assert set(candidate.parents) == {"large:v0", *deployment["adapted"].values()}
    feedback = next(r for r in registry.list_runs() if r.id == summary["feedback_run"])
    assert feedback.recipe["data"]["collected"] == dataset
    assert not [m for m in registry.list_models() if m.name.endswith(".finetune")]  # no full-size experts
