"""Module reuse: grafting expert layers (or a LoRA adapter's update on them) into the large model."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from _merge_fixtures import tiny_large, tiny_swarm

from fanbu.derive.finetune.config import LoraSettings
from fanbu.derive.finetune.lora import add_lora
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.weights import SelectionConfig, plain_state
from fanbu.feedback.strategies.graft import (
    GraftConfig,
    graft_layers,
    graft_strategy,
    layer_change,
    layer_keys,
)


def _perturb_layer(handle, layer: int, seed: int = 0):
    """A copy of ``handle`` whose encoder layer ``layer`` (only) is changed."""
    changed = copy.deepcopy(handle)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in changed.model.encoder.named_parameters():
            if name.startswith(f"encoder.layer.{layer}."):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return changed


def test_graft_is_registered() -> None:
    assert get_strategy("graft").config is GraftConfig


def test_grafting_an_unchanged_layer_changes_nothing() -> None:
    swarm = tiny_swarm()
    expert = _perturb_layer(swarm.large, 1)  # layer 0 stays the champion's
    grafted = graft_layers(swarm.large, expert, [0])
    texts = swarm.tests["faith"][0]
    np.testing.assert_allclose(
        grafted.predict_proba(texts, "faith"), swarm.large.predict_proba(texts, "faith"), atol=1e-6
    )
    whole = graft_layers(swarm.large, expert, [1])  # the only changed layer: now equal to the expert
    np.testing.assert_allclose(
        whole.predict_proba(texts, "faith"), expert.predict_proba(texts, "faith"), atol=1e-6
    )


def test_graft_parts_touch_only_their_block() -> None:
    swarm = tiny_swarm()
    expert = swarm.experts["topic"]
    grafted = plain_state(graft_layers(swarm.large, expert, [1], part="ffn"))
    base, source = plain_state(swarm.large), plain_state(expert)
    ffn = set(layer_keys(base, 1, "ffn"))
    assert ffn and all(k.startswith(("encoder.layer.1.intermediate", "encoder.layer.1.output")) for k in ffn)
    for key, value in grafted.items():
        assert torch.equal(value, source[key] if key in ffn else base[key]), key


def test_grafting_a_lora_adapter_applies_its_update_on_the_chosen_layers() -> None:
    swarm = tiny_swarm()
    adapted = copy.deepcopy(swarm.large)
    adapted.model.encoder = add_lora(adapted.model.encoder, LoraSettings(r=2))
    with torch.no_grad():
        for name, param in adapted.model.encoder.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    grafted = plain_state(graft_layers(swarm.large, adapted, [0]))
    merged = plain_state(adapted)
    base = plain_state(swarm.large)
    layer0 = set(layer_keys(base, 0, "layer"))
    assert any(not torch.equal(merged[k], base[k]) for k in layer0)
    for key, value in grafted.items():
        assert torch.allclose(value, merged[key] if key in layer0 else base[key], atol=1e-6), key


def test_auto_choice_takes_each_experts_most_changed_layer(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    experts = {"sentiment": _perturb_layer(swarm.large, 0), "topic": _perturb_layer(swarm.large, 1, seed=1)}
    for domain, expert in experts.items():  # each expert keeps its domain head from fine-tuning
        expert.model.heads[domain].load_state_dict(swarm.experts[domain].model.heads[domain].state_dict())
    assert np.argmax(layer_change(swarm.large, experts["topic"])) == 1
    out = graft_strategy(
        swarm.context(tmp_path, experts), GraftConfig(selection=SelectionConfig(enabled=False))
    )
    assert out.details["layers"] == {"sentiment": [0], "topic": [1]}
    state = plain_state(out.handle)
    for domain, layer in (("sentiment", 0), ("topic", 1)):
        source = plain_state(experts[domain])
        assert all(torch.equal(state[k], source[k]) for k in layer_keys(state, layer, "layer"))
        assert torch.equal(out.handle.model.heads[domain].weight, experts[domain].model.heads[domain].weight)


def test_graft_errors(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    with pytest.raises(ConfigError, match="do not exist"):
        graft_layers(swarm.large, swarm.experts["topic"], [5])
    with pytest.raises(ConfigError, match="swarm distillation"):
        graft_layers(swarm.large, tiny_large(intermediate_size=48), [0])
    ctx = swarm.context(tmp_path)
    with pytest.raises(ConfigError, match="asked of both"):
        graft_strategy(
            ctx,
            GraftConfig(layers={"sentiment": [0], "topic": [0]}, selection=SelectionConfig(enabled=False)),
        )
    with pytest.raises(ConfigError, match="no \\(selected\\) expert"):
        graft_strategy(ctx, GraftConfig(layers={"nope": [0]}))
