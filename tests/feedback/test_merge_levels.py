"""Merging by level in the merge strategy: leaves into their group first, then the groups into the champion."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from _merge_fixtures import DOMAINS, tiny_swarm
from pydantic import ValidationError

from fanbu.errors import ConfigError
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.feedback.shared.weights import SelectionConfig, plain_state
from fanbu.feedback.strategies.merge import (
    MergeConfig,
    level_steps,
    merge_states,
    merge_states_by_level,
    merge_strategy,
)
from fanbu.hierarchy.tree import ROOT, DomainTree, TreeConfig

NO_SELECTION = SelectionConfig(enabled=False)


def states(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """A champion and three experts of two random tensors each."""
    gen = torch.Generator().manual_seed(seed)
    champion = {"w": torch.randn(6, 4, generator=gen), "b": torch.randn(6, generator=gen)}
    experts = {d: {k: v + torch.randn(v.shape, generator=gen) for k, v in champion.items()} for d in "abc"}
    return champion, experts


def test_groups_count_once_at_their_level():
    champion, experts = states()
    tree = DomainTree({"g": None}, {"a": "g", "b": "g", "c": None})
    merged, steps = merge_states_by_level(
        champion, experts, dict.fromkeys("abc", 1.0), tree, MergeConfig(method="average")
    )
    for key, base in champion.items():
        vectors = {d: experts[d][key] - base for d in "abc"}
        expected = base + 0.25 * vectors["a"] + 0.25 * vectors["b"] + 0.5 * vectors["c"]
        assert torch.allclose(merged[key], expected, atol=1e-6)
    assert [(s.into, s.children) for s in steps] == [("g", ("a", "b")), (ROOT, ("g", "c"))]


def test_a_flat_tree_is_the_flat_merge():
    champion, experts = states(1)
    tree = DomainTree({}, dict.fromkeys("abc"))
    config = MergeConfig(method="ties", density=0.5)
    flat = merge_states(champion, [experts[d] for d in "abc"], [1.0] * 3, config)
    by_level, steps = merge_states_by_level(champion, experts, dict.fromkeys("abc", 1.0), tree, config)
    assert len(steps) == 1
    for key in champion:
        assert torch.allclose(flat[key], by_level[key], atol=1e-6)


def test_deepest_groups_merge_first_and_a_group_weighs_its_childrens_mean():
    tree = DomainTree({"top": None, "mid": "top"}, {"a": "mid", "b": "mid", "c": "top", "d": None})
    steps = level_steps(tree, {"a": 1.0, "b": 3.0, "c": 1.0, "d": 2.0})
    assert [s.into for s in steps] == ["mid", "top", ROOT]
    assert steps[1].children == ("mid", "c") and steps[1].weights == (2.0, 1.0)
    assert steps[2].children == ("top", "d") and steps[2].weights == (1.5, 2.0)
    # a leaf left out (not selected) leaves no trace; an empty group is skipped
    assert [s.into for s in level_steps(tree, {"c": 1.0, "d": 1.0})] == ["top", ROOT]


def test_the_strategy_merges_by_level_and_says_how(tmp_path: Path):
    swarm = tiny_swarm()
    levels = TreeConfig(groups={"g": None}, leaves=dict.fromkeys(DOMAINS, "g"))
    out = merge_strategy(
        swarm.context(tmp_path), MergeConfig(method="average", selection=NO_SELECTION, levels=levels)
    )
    flat = merge_strategy(swarm.context(tmp_path), MergeConfig(method="average", selection=NO_SELECTION))
    # one group holding every domain, alone on the trunk: the same as the flat average
    a, b = plain_state(out.handle), plain_state(flat.handle)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert out.details["levels"] == [
        {"into": "g", "children": list(DOMAINS), "weights": [1.0, 1.0]},
        {"into": ROOT, "children": ["g"], "weights": [1.0]},
    ]


@pytest.mark.parametrize(
    ("leaves", "says"),
    [
        ({}, "no leaves"),
        ({DOMAINS[0]: None}, "no group for"),
        ({**dict.fromkeys(DOMAINS), "weather": None}, "not domains of the swarm"),
    ],
)
def test_a_tree_that_does_not_fit_the_swarm_is_refused(leaves, says, tmp_path: Path):
    swarm = tiny_swarm()
    config = MergeConfig(selection=NO_SELECTION, levels=TreeConfig(groups={}, leaves=leaves))
    with pytest.raises(ConfigError, match=says):
        merge_strategy(swarm.context(tmp_path), config)
    champion, experts = states()
    with pytest.raises(ConfigError, match="no place in the tree"):
        merge_states_by_level(
            champion, experts, dict.fromkeys("abc", 1.0), DomainTree({}, {"a": None}), MergeConfig()
        )


def _files(tmp_path: Path, groups: dict[str, str | None]) -> list[dict]:
    out = []
    for name, group in groups.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
        out.append({"name": name, "train": str(path), "group": group})
    return out


def test_a_recipe_takes_the_leaves_from_its_domain_sources(tmp_path: Path):
    files = _files(tmp_path, {"news": "media", "sport": "media", "law": None})
    recipe = FeedbackRecipe.model_validate(
        {
            "data": {"source": "files", "files": files},
            "strategies": [{"merge": {"method": "ties", "levels": {"groups": {"media": None}}}}],
        }
    )
    ((_, config),) = recipe.parsed_strategies()
    assert config.levels.leaves == {"news": "media", "sport": "media", "law": None}
    # a source's group that levels.groups does not define is named
    files = _files(tmp_path, {"news": "press", "law": None})
    with pytest.raises((ValidationError, ConfigError), match="group 'press' is unknown"):
        FeedbackRecipe.model_validate(
            {
                "data": {"source": "files", "files": files},
                "strategies": [{"merge": {"levels": {"groups": {"media": None}}}}],
            }
        )
    # leaves written out are kept as written
    written = {"groups": {"media": None}, "leaves": {"news": None, "sport": "media", "law": None}}
    recipe = FeedbackRecipe.model_validate(
        {
            "data": {
                "source": "files",
                "files": _files(tmp_path, {"news": "media", "sport": "media", "law": None}),
            },
            "strategies": [{"merge": {"levels": copy.deepcopy(written)}}],
        }
    )
    assert recipe.parsed_strategies()[0][1].levels.leaves == written["leaves"]
