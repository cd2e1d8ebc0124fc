"""``fanbu hierarchy`` end to end on a tiny trunk and tiny JSONL domains: the stack and each new domain's
start are registered with their lineage, and recipe errors name the setting."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.config import load_recipe
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.errors import ConfigError
from fanbu.hierarchy.run import HierarchyRunRecipe, plan_tree, run_hierarchy
from fanbu.hierarchy.saving import KIND, load_stack
from fanbu.hierarchy.trunks import MeanPooled
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace

# Domain -> (its file's group, its two classes' words). swim and chip are new: attached after training.
DOMAINS: dict[str, tuple[str | None, tuple[str, str]]] = {
    "ball": ("sport", ("goal kick pitch", "bat wicket bowl")),
    "race": ("sport", ("car lap engine", "horse jockey saddle")),
    "soft": ("tech", ("code compile bug", "cloud server deploy")),
    "swim": (None, ("pool lane stroke", "sea wave shore")),
    "chip": ("tech", ("silicon wafer gate", "battery charge volt")),
}
FILLER = ["the", "a", "and", "of", "team", "game", "new", "fast"]


def write_domain(path: Path, words: tuple[str, str], seed: int, n: int = 40) -> str:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            label = i % 2
            text = rng.sample(words[label].split(), 2) + rng.sample(FILLER, 3)
            rng.shuffle(text)
            fh.write(json.dumps({"text": " ".join(text), "label": ["first", "second"][label]}) + "\n")
    return str(path)


@pytest.fixture
def recipe(tmp_path: Path) -> dict[str, Any]:
    """A recipe on a tiny saved trunk: ball and race under sport, soft under tech; swim and chip to attach."""
    trunk = tmp_path / "trunk"
    EncoderHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=32).save(
        trunk, Provenance(name="tiny"))
    files = [{"name": name, "train": write_domain(tmp_path / f"{name}.jsonl", words, seed), "group": group,
              "validation_fraction": 0.3}
             for seed, (name, (group, words)) in enumerate(DOMAINS.items())]
    stage = {"epochs": 1, "batch_size": 8, "lr": 1e-2, "progress": False}
    return {
        "data": {"source": "files", "files": files},
        "groups": {"sport": None, "tech": None},
        "attach": ["swim", "chip"],
        "hierarchy": {"trunk": str(trunk), "max_length": 16, "adapter": {"rank": 2},
                      "training": {"groups": stage, "leaves": stage}},
        "name": "tree",
    }


def test_stack_and_starts_are_registered_with_their_lineage(recipe: dict[str, Any], tmp_path: Path,
                                                            one_thread) -> None:
    registry = Registry.open(tmp_path / "home")
    workspace = Workspace(registry)
    summary = run_hierarchy(load_recipe(HierarchyRunRecipe, None, base=recipe), workspace)

    stack = registry.get_model(summary["stack"])
    assert (stack.name, stack.kind, stack.relation) == ("tree", KIND, "adapter")
    assert stack.parents == (summary["trunk"],) and summary["trunk"] == "trunk:v0"
    assert {leaf: row["group"] for leaf, row in summary["leaves"].items()} == {
        "ball": "sport", "race": "sport", "soft": "tech"}
    assert all(0.0 <= row[split] <= 1.0 for row in summary["leaves"].values() for split in ("validation", "test"))
    assert [s["node"] for s in summary["stages"]] == ["sport", "tech", "ball", "race", "soft"]
    assert {(e.domain, e.split) for e in registry.evaluations(stack.id)} == {
        (leaf, split) for leaf in ("ball", "race", "soft") for split in ("validation", "test")}

    swim, chip = summary["attachments"]["swim"], summary["attachments"]["chip"]
    assert swim["how"] == "centroid" and set(swim["similarities"]) == {"sport", "tech"}
    assert swim["group"] == max(swim["similarities"], key=swim["similarities"].get)
    assert (chip["how"], chip["group"]) == ("recipe", "tech")  # chip's file names its group
    start = registry.get_model(swim["model"])
    assert (start.name, start.kind, start.relation) == ("swim.start", "encoder", "merge")
    assert start.parents == (stack.id,) and start.metadata["group"] == swim["group"]

    # The start loads back through the workspace with a head for the new domain, and its encoder is the
    # registered stack's trunk with the group's path of adapters merged in.
    handle = workspace.load_encoder(swim["model"])
    assert handle.labels == {"swim": ["first", "second"]}
    trunk = EncoderHandle.from_source(recipe["hierarchy"]["trunk"], max_length=16)
    saved = load_stack(stack.path, MeanPooled(trunk.model.encoder)).eval()
    texts = ["pool lane the", "sea shore a wave"]
    with torch.no_grad():
        features, _ = handle.encode(texts)
        assert torch.allclose(features, saved.features(swim["group"], **trunk.tokenize(texts)), atol=1e-5)
    [run] = registry.list_runs()
    assert (run.kind, run.status) == ("hierarchy", "succeeded")

    # derive takes the start as its teacher: the new domain's small model descends from the group's adapters
    swim_file = next(f for f in recipe["data"]["files"] if f["name"] == "swim")
    derive = DeriveRecipe.model_validate({
        "teacher": swim["model"], "max_length": 16, "data": {"source": "files", "files": [swim_file]},
        "stages": [{"finetune": {"train": {"epochs": 1, "progress": False}}}]})
    [derived] = run_derive(derive, registry)
    assert registry.get_model(derived["models"][0]).parents == (swim["model"],)
    registry.close()


def test_a_stack_on_the_top_layers_trains_on_cached_states(recipe: dict[str, Any], tmp_path: Path,
                                                          one_thread) -> None:
    resolved = load_recipe(HierarchyRunRecipe, None, ["hierarchy.tail_layers=1", "attach=[]", "max_train=10"],
                           base=recipe)
    with Registry.open(tmp_path / "home") as registry:
        summary = run_hierarchy(resolved, Workspace(registry))
        assert registry.get_model(summary["stack"]).kind == KIND
    # swim and chip are no longer attached, so they are leaves: swim on the trunk, chip under tech
    assert summary["tree"] == {"sport": "trunk", "tech": "trunk", "ball": "sport", "race": "sport",
                               "soft": "tech", "swim": "trunk", "chip": "tech"}
    assert summary["attachments"] == {} and set(summary["leaves"]) == set(DOMAINS)


def test_command_prints_the_leaves_and_the_start_to_derive_from(recipe: dict[str, Any], tmp_path: Path,
                                                                 one_thread) -> None:
    path = tmp_path / "hierarchy.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["hierarchy", str(path), "attach=[swim]", "--home", str(tmp_path / "home")])
    assert result.exit_code == 0, result.output
    assert "adapter stack tree:v0" in result.output and "ball" in result.output
    assert "trained ball: " in result.output  # a progress line as each stage of the tree ends
    assert "swim -> " in result.output and "centroid" in result.output
    assert "derive it: set teacher: swim.start:v0 in a derive recipe" in result.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attach=[swim, nope]"], r"attach\.1: 'nope' is not a domain of the data \(domains: data\.files\.0\.name"),
        (["groups={}", "attach=[]", "hierarchy.tree={groups: {g: null}, leaves: {ball: g, ghost: g}}"],
         r"hierarchy\.tree\.leaves\.ghost: no domain of the data has this name"),
        (["hierarchy.tail_layers=1"], r"hierarchy\.tail_layers: .*set hierarchy\.tail_layers: null to export starting"),
        (["attach=[ball]", "hierarchy.tree={groups: {g: null}, leaves: {ball: g}}", "groups={}"],
         r"attach\.0: 'ball' is a leaf of hierarchy\.tree"),
        (["groups={sport: null}", "attach=[swim]"], r"data\.files\.2\.group: group 'tech' of domain 'soft' is unknown"),
        (["groups={sport: null, tech: null, water: null}"], r"groups\.water: no leaf domain is under this group"),
    ],
)
def test_recipe_errors_name_the_setting(recipe: dict[str, Any], overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(HierarchyRunRecipe, None, overrides, base=recipe)


def test_an_attach_domain_names_a_group_of_the_tree(recipe: dict[str, Any]) -> None:
    recipe["data"]["files"][4]["group"] = "water"
    with pytest.raises(ConfigError, match=r"data\.files\.4\.group: group 'water' of domain 'chip' is unknown "
                                          r"\(groups: sport, tech\); fix its group, or leave it unset"):
        load_recipe(HierarchyRunRecipe, None, base=recipe)


def test_the_built_in_source_sits_flat_unless_a_tree_places_it() -> None:
    config, note = plan_tree(HierarchyRunRecipe(attach=[]), ["comp", "rec", "sci"])
    assert config.leaves == {"comp": None, "rec": None, "sci": None} and not config.groups
    assert note is not None and "hierarchy.tree" in note
    placed = HierarchyRunRecipe(attach=["sci"], hierarchy={"tree": {"groups": {"g": None},
                                                                    "leaves": {"comp": "g", "rec": "g"}}})
    config, note = plan_tree(placed, ["comp", "rec", "sci"])
    assert config.leaves == {"comp": "g", "rec": "g"} and note is None
    with pytest.raises(ConfigError, match="groups: the built-in source's domains carry no group"):
        plan_tree(HierarchyRunRecipe(groups={"g": None}), ["comp", "rec"])
