"""A small policy born from the general one: structured pruning, then distillation on the variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fanbu.errors import ConfigError
from fanbu.models import Provenance
from fanbu.rl.derive import PolicyDeriveConfig, derive_small_policy, neuron_importance, prune_policy
from fanbu.rl.evaluate import evaluate_policy
from fanbu.rl.policy import load_policy, new_policy, save_policy
from fanbu.rl.variants import Variant

from .conftest import balancing_teacher


def test_keeping_every_neuron_changes_nothing() -> None:
    policy = new_policy(4, 2, {"hidden": [8, 6]}, seed=1)
    same = prune_policy(policy, 1.0)
    obs = torch.randn(64, 4)
    assert same.hidden == [8, 6] and torch.allclose(same(obs), policy(obs))


def test_the_cut_removes_the_least_important_neurons_first(tmp_path: Path, cartpole: list[Variant]) -> None:
    teacher = balancing_teacher()  # one active hidden neuron of four
    scores = neuron_importance(teacher)[0]
    assert scores[0] > 0 and torch.all(scores[1:] == 0)
    small = prune_policy(teacher, 0.25)
    assert small.hidden == [1]
    obs = torch.randn(256, 4)
    assert torch.allclose(small(obs), teacher(obs))  # only dead neurons went
    out = save_policy(small, tmp_path / "small", Provenance())
    loaded, _ = load_policy(out)
    assert loaded.hidden == [1] and evaluate_policy(loaded, cartpole[0], 1).returns == evaluate_policy(
        teacher, cartpole[0], 1).returns


def test_pruned_shapes_and_bad_keep() -> None:
    policy = new_policy(6, 3, {"hidden": [10, 7]}, seed=0)
    small = prune_policy(policy, 0.5)
    assert small.hidden == [5, 4] and sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in policy.parameters())
    with pytest.raises(ConfigError, match="keep=0"):
        prune_policy(policy, 0.0)


def test_derived_policy_learns_back_what_the_cut_lost(cartpole: list[Variant]) -> None:
    general = new_policy(4, 2, {"hidden": [32, 32]}, seed=3)
    with torch.no_grad():  # a decisive general policy, so its argmax is a real target
        general.linears()[-1].weight.mul_(10)
    config = PolicyDeriveConfig(keep=0.125, distill={
        "rounds": 3, "steps_per_variant": 300,
        "train": {"epochs": 8, "batch_size": 64, "lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0,
                  "schedule": "constant", "progress": False, "restore_best": False}})
    small, result = derive_small_policy(general, cartpole[0], config, seed=0)
    assert small.hidden == [4, 4]
    before, after = result.rounds[0][cartpole[0].name], result.final[cartpole[0].name]
    assert after >= 0.9 and after > before + 0.2, (result.rounds, result.final)
