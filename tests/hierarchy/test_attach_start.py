"""Attaching a new domain under the nearest group, and deriving a new leaf's start from a group."""

from __future__ import annotations

import pytest
import torch

from fanbu.errors import ConfigError
from fanbu.hierarchy.attach import nearest_group
from fanbu.hierarchy.data import Examples
from fanbu.hierarchy.start import group_start, group_start_handle
from fanbu.hierarchy.tree import DomainTree
from fanbu.models.encoder import EncoderHandle

from .conftest import make_stack


def _examples(handle: EncoderHandle, texts: list[str]) -> Examples:
    return Examples(handle.tokenize(texts), torch.zeros(len(texts), dtype=torch.long))


def test_nearest_group_by_centroid_and_by_recipe(handle: EncoderHandle, one_thread) -> None:
    tree = DomainTree({"sport": None, "tech": None}, {"ball": "sport", "soft": "tech"})
    stack = make_stack(handle, tree)
    leaves = {
        "ball": _examples(handle, ["game team sport", "the sport game"] * 3),
        "soft": _examples(handle, ["computer software", "hardware computer program"] * 3),
    }
    new = _examples(handle, ["sport team game", "game sport"])
    found = nearest_group(stack, "new", new, leaves)
    assert found.source == "centroid" and set(found.similarities) == {"sport", "tech"}
    assert found.group == max(found.similarities, key=found.similarities.get)
    assert found.similarities["sport"] > found.similarities["tech"]
    told = nearest_group(stack, "new", new, leaves, group="tech")
    assert (told.group, told.source) == ("tech", "recipe")
    with pytest.raises(ConfigError, match="domain 'new': group 'nope' is unknown"):
        nearest_group(stack, "new", new, leaves, group="nope")


def test_group_start_is_trunk_plus_the_group_path(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree)
    inputs = handle.tokenize(["the game was great", "software"])
    start = group_start(stack, "sport")
    with torch.no_grad():
        assert torch.allclose(start(**inputs), stack.features("sport", **inputs), atol=1e-5)
    assert len(stack.adapter_names) == 5  # the stack itself is untouched
    derived = group_start_handle(handle, stack, "sport", "sport.new", ["x", "y", "z"])
    assert derived.labels == {"sport_new": ["x", "y", "z"]}
    with torch.no_grad():
        features, _ = derived.encode(["the game was great", "software"])
    assert torch.allclose(features, stack.features("sport", **inputs), atol=1e-5)
    with pytest.raises(ConfigError, match="'sport.ball' is not a group"):
        group_start(stack, "sport.ball")


def test_centered_similarities(handle: EncoderHandle, one_thread) -> None:
    tree = DomainTree({"sport": None, "tech": None}, {"ball": "sport", "soft": "tech"})
    stack = make_stack(handle, tree)
    leaves = {"ball": _examples(handle, ["game team sport"] * 2), "soft": _examples(handle, ["computer software"] * 2)}
    found = nearest_group(stack, "new", _examples(handle, ["sport team game"]), leaves, center=True)
    assert found.group == "sport" and found.similarities["sport"] > 0 > found.similarities["tech"]
