"""Merge by level: leaves into their group first (deepest first), then the top groups into the trunk."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer

from fanbu.errors import ConfigError
from fanbu.hierarchy.merge import LevelMergeSettings, merge_by_level, merge_into_groups, merge_into_trunk
from fanbu.hierarchy.stack import node_key
from fanbu.hierarchy.tree import ROOT, DomainTree
from fanbu.models.encoder import EncoderHandle

from .conftest import make_stack


def _deltas(stack) -> dict[str, dict[str, torch.Tensor]]:
    """Per LoRA layer, every adapter's delta weight."""
    return {
        name: {key: module.get_delta_weight(key).detach().clone() for key in module.lora_A}
        for name, module in stack.peft.base_model.model.named_modules()
        if isinstance(module, LoraLayer)
    }


def test_bottom_up_order_and_exact_deltas(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree)
    before = _deltas(stack)
    base = {n: m.base_layer.weight.detach().clone() for n, m in stack.peft.base_model.model.named_modules()
            if isinstance(m, LoraLayer)}
    trunk, steps = merge_by_level(stack)
    assert [(s.into, s.children) for s in steps] == [
        ("sport", ("sport.ball", "sport.race")),
        ("topics", ("sport", "tech")),
        (ROOT, ("topics",)),
    ]
    assert [s.depth for s in steps] == [2, 1, 0]
    key = {n: node_key(n) for n in ("topics", "sport", "sport.ball", "sport.race", "tech")}
    for name, deltas in before.items():
        sport = deltas[key["sport"]] + 0.5 * (deltas[key["sport.ball"]] + deltas[key["sport.race"]])
        topics = deltas[key["topics"]] + 0.5 * (sport + deltas[key["tech"]])
        merged = trunk.get_submodule(name).weight
        assert torch.allclose(merged, base[name] + topics, atol=1e-5), name
    assert stack.adapter_names == [stack.adapter_of["topics"]]
    assert set(stack.adapter_of) == {"topics"}


def test_leaf_forward_after_group_merge_uses_the_merged_group(handle: EncoderHandle, one_thread) -> None:
    tree = DomainTree({"g": None}, {"a": "g", "b": "g"})
    stack = make_stack(handle, tree)
    inputs = handle.tokenize(["the game was great"])
    merge_into_groups(stack)
    with torch.no_grad():
        assert torch.allclose(stack.features("a", **inputs), stack.features("g", **inputs))
        trunk, step = merge_into_trunk(stack)
        assert torch.allclose(trunk(**inputs), stack.features("g", **inputs), atol=1e-5)
    assert step.into == ROOT and step.children == ("g",)


def test_svd_merge_and_bad_settings(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree)
    steps = merge_into_groups(stack, LevelMergeSettings(combination="ties_svd", density=0.5, svd_rank=2))
    assert [s.into for s in steps] == ["sport", "topics"]
    with pytest.raises(ValueError, match="density applies to the pruning variants"):
        LevelMergeSettings(combination="cat", density=0.5)
    flat = make_stack(handle, DomainTree.flat(["x"]))
    with pytest.raises(ConfigError, match="PEFT keeps at least one adapter"):
        flat.drop("x")
