"""The policy as a fanbu model: save/load with provenance, registry lineage, same actions after reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fanbu.errors import ConfigError, ModelError
from fanbu.models import ModuleHandle, load_handle
from fanbu.registry.workspace import Workspace
from fanbu.rl.artefacts import load_registered_policy, policy_provenance, register_policy
from fanbu.rl.evaluate import episode_seeds, evaluate_policy, normalized, random_return, target_return
from fanbu.rl.policy import (
    FACTORY,
    PolicyConfig,
    as_policy,
    check_compatible,
    load_policy,
    new_policy,
    save_policy,
)
from fanbu.rl.variants import Variant

from .conftest import balancing_teacher


def test_save_load_round_trip_keeps_provenance_and_actions(tmp_path: Path, cartpole: list[Variant]) -> None:
    policy = new_policy(4, 2, PolicyConfig(hidden=[8, 8]), seed=3)
    provenance = policy_provenance(policy, cartpole[:2], {"ppo": {"total_steps": 10}}, parents=["a:v0"],
                                   metrics={"test_return": 21.5})
    out = save_policy(policy, tmp_path / "policy", provenance)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.zip")) and not list(out.glob("*.pkl"))
    loaded, read = load_policy(out)
    assert read.parents == ["a:v0"] and read.metrics == {"test_return": 21.5}
    assert read.data_fingerprints == {v.name: v.fingerprint for v in cartpole[:2]}
    assert read.extra["rl"]["env_ids"] == ["CartPole-v1"] and read.extra["rl"]["n_actions"] == 2
    obs = torch.randn(256, 4)
    assert torch.equal(loaded(obs).argmax(-1), policy(obs).argmax(-1))
    assert torch.allclose(loaded(obs), policy(obs))
    dispatched = load_handle(out)  # the one loading path of every model kind
    assert isinstance(dispatched, ModuleHandle) and dispatched.factory == FACTORY
    assert evaluate_policy(loaded, cartpole[0], 2).returns == evaluate_policy(policy, cartpole[0], 2).returns


def test_registered_policy_carries_lineage(tmp_path: Path, cartpole: list[Variant]) -> None:
    workspace = Workspace.open(tmp_path / "home")
    try:
        teacher = balancing_teacher()
        parent = register_policy(workspace, teacher, policy_provenance(teacher, cartpole[:1], {}), name="e.expert")
        child = new_policy(4, 2, seed=1)
        record = register_policy(workspace, child, policy_provenance(child, cartpole, {}, parents=[parent.id]),
                                 name="general", relation="distilled", metadata={"method": "distill"})
        assert record.kind == "module" and record.relation == "distilled" and record.parents == (parent.id,)
        assert [a.id for a in workspace.registry.ancestors(record.id)] == [parent.id]
        again = load_registered_policy(workspace, "general:v0")
        obs = torch.randn(64, 4)
        assert torch.equal(again(obs), child(obs))
    finally:
        workspace.registry.close()


def test_a_module_that_is_not_a_policy_is_refused(tmp_path: Path) -> None:
    from fanbu.models import Provenance

    out = ModuleHandle(torch.nn.Linear(4, 2), {"in_features": 4, "out_features": 2}, "torch.nn:Linear").save(
        tmp_path / "lin", Provenance())
    with pytest.raises(ModelError, match="holds a Linear, not a policy"):
        load_policy(out)
    with pytest.raises(ModelError, match="not a policy"):
        as_policy(object())


def test_size_mismatches_are_explained() -> None:
    policy = new_policy(4, 2)
    with pytest.raises(ConfigError, match="the policy has 2 actions but the env has 3: the action spaces differ"):
        check_compatible(policy, 4, 3, "the policy", "the env")
    with pytest.raises(ConfigError, match="reads observations of size 4 but the env gives 6"):
        check_compatible(policy, 6, 2, "the policy", "the env")
    with pytest.raises(ConfigError, match="variant 'acro'"):
        evaluate_policy(policy, Variant("Acrobot-v1", "acro"), 1)


def test_returns_are_seeded_and_splits_are_disjoint(cartpole: list[Variant]) -> None:
    teacher = balancing_teacher()
    first = evaluate_policy(teacher, cartpole[0], 3, "test", seed=0)
    assert first == evaluate_policy(teacher, cartpole[0], 3, "test", seed=0)
    assert first.mean > 5 * random_return(cartpole[0], 3, "test").mean  # the controller balances
    assert not set(episode_seeds("gate", 100, 0)) & set(episode_seeds("test", 100, 0))
    assert not set(episode_seeds("test", 100, 0)) & set(episode_seeds("test", 100, 1))
    with pytest.raises(ConfigError, match="episode split 'train'"):
        episode_seeds("train", 1)


def test_normalized_returns() -> None:
    assert normalized(-100.0, -500.0, -80.0) == pytest.approx(400 / 420)  # Acrobot's negative returns
    assert target_return(20.0, 500.0) == pytest.approx(452.0)
    with pytest.raises(ConfigError, match="not above a random policy's"):
        normalized(10.0, 20.0, 15.0)
