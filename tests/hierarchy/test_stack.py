"""The adapter stack: a leaf's forward is the trunk plus its path's summed deltas; dropping a leaf gives the
group model; training goes top-down with ancestors frozen."""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.lora import LoraLayer

from fanbu.hierarchy.data import Examples, LeafData
from fanbu.hierarchy.stack import AdapterSettings, AdapterStack, node_key
from fanbu.hierarchy.training import TopDownSettings, fit_top_down, train_node
from fanbu.hierarchy.tree import ROOT, DomainTree
from fanbu.hierarchy.trunks import FeatureNeck, MeanPooled
from fanbu.models.encoder import EncoderHandle
from fanbu.train.config import TrainConfig

from .conftest import leaf_data, make_stack


def _summed_trunk(stack, nodes: list[str]) -> MeanPooled:
    """A plain copy of the trunk whose adapted weights are ``W + sum of the nodes' deltas``, by hand."""
    reference = copy.deepcopy(stack.peft.base_model.model)
    for name, module in stack.peft.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            delta = sum(module.get_delta_weight(node_key(n)) for n in nodes)
            plain = reference.get_submodule(name).base_layer
            plain.weight.data = module.base_layer.weight.data + delta
    for name, module in list(reference.named_modules()):
        if isinstance(module, LoraLayer):
            parent, _, child = name.rpartition(".")
            setattr(reference.get_submodule(parent), child, module.base_layer)
    return reference


def test_leaf_output_is_trunk_plus_group_plus_leaf(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree)
    inputs = handle.tokenize(["the game was great", "new software"])
    with torch.no_grad():
        got = stack.features("sport.ball", **inputs)  # (2, hidden)
        want = _summed_trunk(stack, ["topics", "sport", "sport.ball"])(**inputs)
        plain = stack.features(ROOT, **inputs)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the deltas are not zero


def test_dropping_a_leaf_gives_the_group_model(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree)
    inputs = handle.tokenize(["the game was great", "car race"])
    with torch.no_grad():
        group = stack.features("sport", **inputs)
        group_logits = stack("sport", "sport.ball", **inputs)
        leaf = stack.features("sport.ball", **inputs)
        stack.drop("sport.ball")
        dropped = stack.features("sport.ball", **inputs)
        assert torch.allclose(dropped, group, atol=1e-6)
        assert torch.allclose(stack("sport", "sport.ball", **inputs), group_logits, atol=1e-6)
    assert not torch.allclose(leaf, group, atol=1e-3)
    assert "sport_ball" not in stack.adapter_names


def _adapter_state(stack, node: str) -> dict[str, torch.Tensor]:
    key = f".{node_key(node)}."
    return {n: p.detach().clone() for n, p in stack.peft.named_parameters() if key in n}


def test_top_down_order_and_frozen_ancestors(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree, random_b=False).train()
    data = leaf_data(handle)
    config = TrainConfig(epochs=2, batch_size=2, lr=1e-2, progress=False, warmup_ratio=0.0)
    records = fit_top_down(stack, data, TopDownSettings(groups=config, leaves=config))
    order = [r.node for r in records]
    assert order == ["topics", "sport", "sport.ball", "sport.race", "tech"]
    for position, node in enumerate(order):
        assert all(order.index(a) < position for a in tree.ancestors(node))
    assert records[0].leaves == ("sport.ball", "sport.race", "tech")
    before_groups = {g: _adapter_state(stack, g) for g in ("topics", "sport")}
    before_leaf = _adapter_state(stack, "tech")
    head = stack.heads[stack.head_key("tech", "tech")].weight.detach().clone()
    train_node(stack, "tech", data, config, trained={"topics", "sport"})
    for group, state in before_groups.items():
        after = _adapter_state(stack, group)
        assert all(torch.equal(state[n], after[n]) for n in state), group
    after_leaf = _adapter_state(stack, "tech")
    assert any(not torch.equal(before_leaf[n], after_leaf[n]) for n in before_leaf)
    assert not torch.equal(head, stack.heads[stack.head_key("tech", "tech")].weight)


def test_leaf_head_starts_from_its_group_head(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree, random_b=False).train()
    data = leaf_data(handle)
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-9, progress=False, warmup_ratio=0.0, weight_decay=0.0)
    train_node(stack, "sport", data, config, trained={"topics"})
    group_head = stack.heads[stack.head_key("sport", "sport.race")].weight.detach().clone()
    train_node(stack, "sport.race", data, config, trained={"topics", "sport"})
    leaf_head = stack.heads[stack.head_key("sport.race", "sport.race")].weight
    assert torch.allclose(leaf_head, group_head, atol=1e-6)


def test_missing_leaf_data_is_named(handle: EncoderHandle, tree: DomainTree) -> None:
    stack = make_stack(handle, tree, random_b=False)
    with pytest.raises(Exception, match=r"no training data for the leaf domains \['tech'\]"):
        train_node(stack, "tech", {}, TrainConfig(progress=False), trained=set())


def test_feature_neck_stack(one_thread) -> None:
    """On cached features the plain neck is the identity and a leaf adds its path's bottleneck deltas."""
    tree = DomainTree({"g": None}, {"a": "g", "b": "g"})
    neck = FeatureNeck(hidden_size=8, width=12)
    stack = AdapterStack(neck, tree, {"a": ["x", "y"], "b": ["x", "y"]},
                         AdapterSettings(rank=2, target_modules=["down", "up"]), seed=0).eval()
    features = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.allclose(stack.features(ROOT, features=features), features)
        for name, param in stack.peft.named_parameters():
            if "lora_B" in name:
                param.data.normal_(std=0.3)
        got = stack.features("a", features=features)
        want = _summed_trunk(stack, ["g", "a"])(features=features)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, features)
    examples = Examples({"features": features}, torch.tensor([0, 1, 0, 1, 0]))
    config = TrainConfig(epochs=2, batch_size=2, lr=1e-2, progress=False, warmup_ratio=0.0)
    records = fit_top_down(stack.train(), {n: LeafData(examples, examples) for n in ("a", "b")},
                           TopDownSettings(groups=config, leaves=config))
    assert [r.node for r in records] == ["g", "a", "b"] and all(r.steps == 6 for r in records[1:])


def test_keep_start_when_no_epoch_beats_it(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    stack = make_stack(handle, tree, random_b=False).train()
    data = leaf_data(handle)
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-9, progress=False, warmup_ratio=0.0, weight_decay=0.0)
    train_node(stack, "topics", data, config, trained=set())
    before = _adapter_state(stack, "tech")
    record = train_node(stack, "tech", data, config, trained={"topics"}, keep_start=True)
    assert record.kept_start and record.validation is not None
    after = _adapter_state(stack, "tech")
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_union_group_heads(handle: EncoderHandle, tree: DomainTree, one_thread) -> None:
    labels = {"sport.ball": ["win", "loss"], "sport.race": ["car", "swim"], "tech": ["soft", "hard"]}
    stack = AdapterStack(MeanPooled(handle.model.encoder), tree, labels,
                         AdapterSettings(rank=2, group_head="union"), seed=0)
    assert stack.union_labels("sport") == ["win", "loss", "car", "swim"]
    assert stack.columns("topics", "tech") == [4, 5]
    assert stack.node_heads("sport") == ["sport__*"] and stack.node_heads("tech") == ["tech__tech"]
    inputs = handle.tokenize(["the game was great", "software"])
    stack.eval()
    with torch.no_grad():
        full = stack("sport", "*", **inputs)  # (2, 4)
        assert torch.equal(stack("sport", "sport.race", **inputs), full[:, [2, 3]])
    stack.start_heads("sport.race")
    own = stack.heads[stack.head_key("sport.race", "sport.race")].weight
    assert torch.equal(own, stack.heads["sport__*"].weight[[2, 3]])
    config = TrainConfig(epochs=1, batch_size=2, lr=1e-2, progress=False, warmup_ratio=0.0)
    records = fit_top_down(stack.train(), leaf_data(handle), TopDownSettings(groups=config, leaves=config))
    assert [r.node for r in records] == ["topics", "sport", "sport.ball", "sport.race", "tech"]
