"""The domain tree: paths, orders, and the errors that name the setting."""

from __future__ import annotations

import pytest

from fanbu.errors import ConfigError
from fanbu.hierarchy.newsgroups import NEWSGROUP_LEAVES, newsgroups_tree
from fanbu.hierarchy.tree import ROOT, DomainTree, TreeConfig


def test_paths_and_orders(tree: DomainTree) -> None:
    assert tree.path("sport.ball") == ["topics", "sport", "sport.ball"]
    assert tree.ancestors("tech") == ["topics"]
    assert tree.top_down == ["topics", "sport"]
    assert tree.bottom_up() == ["sport", "topics"]
    assert tree.leaves_under("sport") == ["sport.ball", "sport.race"]
    assert tree.leaves_under(ROOT) == list(tree.leaves)
    assert tree.children("topics") == ["sport", "tech"]


def test_cycle_is_named() -> None:
    with pytest.raises(ConfigError, match=r"groups: the parents form a cycle a -> b -> a"):
        TreeConfig(groups={"a": "b", "b": "a"}, leaves={"x": "a"})


def test_unknown_group_of_a_leaf_is_named() -> None:
    with pytest.raises(ConfigError, match=r"domain 'x': group 'nope' is unknown"):
        TreeConfig(groups={"a": None}, leaves={"x": "nope"})


def test_unknown_parent_is_named() -> None:
    with pytest.raises(ConfigError, match=r"groups.a: parent group 'b' is not defined"):
        DomainTree({"a": "b"}, {"x": "a"})


def test_flat_tree() -> None:
    flat = DomainTree.flat(["x", "y"])
    assert flat.groups == () and flat.path("x") == ["x"]


def test_newsgroups_tree_follows_the_names() -> None:
    tree = newsgroups_tree()
    assert tree.parent["comp.sys"] == "comp" and tree.parent["rec.sport"] == "rec"
    assert tree.parent["talk.politics"] == "politics" and tree.parent["comp"] == ROOT
    assert all(len(groups) >= 2 for groups in NEWSGROUP_LEAVES.values())
    assert sorted(g for leaf in NEWSGROUP_LEAVES.values() for g in leaf) == sorted(
        g for leaf in NEWSGROUP_LEAVES.values() for g in set(leaf)
    )
