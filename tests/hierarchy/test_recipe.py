"""The hierarchy recipe validates, and its tree errors name the setting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fanbu.config import load_recipe
from fanbu.errors import ConfigError
from fanbu.hierarchy.recipe import HierarchyRecipe, build_stack, tree_config
from fanbu.models.encoder import EncoderHandle

RECIPE = Path(__file__).with_name("hierarchy-newsgroups.yaml")


def test_example_recipe_validates() -> None:
    recipe = load_recipe(HierarchyRecipe, RECIPE)
    assert recipe.tree.leaves["comp.sys"] == "comp" and recipe.tail_layers == 1


def test_tree_from_domain_sources() -> None:
    sources = [SimpleNamespace(name="med", group="health"), SimpleNamespace(name="law", group=None)]
    config = tree_config(sources, {"health": None})
    assert config.leaves == {"med": "health", "law": None}
    with pytest.raises(ConfigError, match="domain 'med': group 'health' is unknown"):
        tree_config(sources, {})


def test_a_users_domain_sources_name_their_group() -> None:
    from fanbu.data.loaders import DomainSource

    sources = [DomainSource(name="cardio", train="cardio.jsonl", group="health"),
               DomainSource(name="contracts", train="contracts.jsonl", group="law"),
               DomainSource(name="misc", train="misc.jsonl")]
    config = tree_config(sources, {"health": None, "law": None})
    assert config.leaves == {"cardio": "health", "contracts": "law", "misc": None}
    with pytest.raises(ConfigError, match="domain 'contracts': group 'law' is unknown"):
        tree_config(sources, {"health": None})


def test_cycle_in_a_recipe_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hierarchy.yaml"
    path.write_text("tree:\n  groups: {a: b, b: a}\n  leaves: {x: a}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_recipe(HierarchyRecipe, path)


def test_build_stack_on_a_tail(one_thread) -> None:
    recipe = HierarchyRecipe(tail_layers=1, tree={"groups": {"g": None}, "leaves": {"a": "g"}})
    handle = EncoderHandle.tiny(hidden_size=16, num_layers=2, intermediate_size=32)
    stack = build_stack(recipe, handle, {"a": ["x", "y"]})
    assert stack.adapter_names == ["g", "a"]
