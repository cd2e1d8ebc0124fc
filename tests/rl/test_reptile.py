"""Reptile: one step moves the meta weights toward the adapted ones; the meta loop runs PPO inside."""

from __future__ import annotations

import pytest
import torch

from fanbu.errors import ConfigError
from fanbu.rl.ppo import PPOConfig
from fanbu.rl.reptile import ReptileConfig, meta_train, reptile_step
from fanbu.rl.variants import Variant


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)


def test_one_step_moves_toward_the_adapted_weights() -> None:
    gen = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(8, 4, generator=gen), "b": torch.randn(8, generator=gen),
             "count": torch.tensor(3)}
    adapted = [{k: (v + torch.randn(v.shape, generator=gen) if v.is_floating_point() else v) for k, v in theta.items()}
               for _ in range(3)]
    mean = {k: torch.stack([a[k] for a in adapted]).float().mean(0) for k in ("w", "b")}
    new = reptile_step(theta, adapted, 0.25)
    floats = {k: theta[k] for k in ("w", "b")}
    moved = {k: new[k] for k in ("w", "b")}
    assert _distance(moved, mean) == pytest.approx(0.75 * _distance(floats, mean), rel=1e-5)
    for k in ("w", "b"):
        assert torch.allclose(new[k] - theta[k], 0.25 * (mean[k] - theta[k]), atol=1e-6)
    assert torch.equal(new["count"], theta["count"])  # integer tensors are not interpolated
    assert all(torch.allclose(reptile_step(theta, adapted, 1.0)[k], mean[k], atol=1e-6) for k in ("w", "b"))


def test_mismatched_weights_are_refused() -> None:
    theta = {"w": torch.zeros(2, 2)}
    with pytest.raises(ConfigError, match="do not match the meta weights"):
        reptile_step(theta, [{"w": torch.zeros(3, 2)}], 0.5)
    with pytest.raises(ConfigError, match="no adapted weights"):
        reptile_step(theta, [], 0.5)


def test_step_size_anneals() -> None:
    config = ReptileConfig(iterations=5, step_size=0.5, final_step_size=0.1)
    assert [round(config.step_size_at(i), 3) for i in range(5)] == [0.5, 0.4, 0.3, 0.2, 0.1]
    with pytest.raises(ValueError, match="anneals down"):
        ReptileConfig(step_size=0.1, final_step_size=0.5)


def test_meta_training_runs_ppo_inside(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    from fanbu.rl.experts import shared_init

    init = shared_init(cartpole, tiny_ppo, seed=0)
    config = ReptileConfig(iterations=2, inner_steps=64, meta_batch=2, step_size=0.5, final_step_size=0.5)
    result = meta_train(cartpole, tiny_ppo, config, seed=0, init=init)
    assert result.steps == 2 * 2 * 64
    assert _distance(result.state, init) > 0
    assert [len(h["variants"]) for h in result.history] == [2, 2]
    obs = torch.randn(16, 4)
    assert result.actor(obs).shape == (16, 2)


def test_meta_training_from_a_general_policy_takes_its_shape(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    from fanbu.rl.policy import new_policy

    general = new_policy(4, 2, {"hidden": [8, 8]}, seed=1)
    config = ReptileConfig(iterations=1, inner_steps=64, meta_batch=1, critic_warmup=64)
    result = meta_train(cartpole, tiny_ppo, config, seed=0, init=general)
    assert result.ppo.policy.hidden == [8, 8] and result.actor.hidden == [8, 8]
    warmup = result.history[0]["critic_warmup"]  # a whole rollout over the 4 variants at least
    assert warmup >= 64 and result.steps == warmup + 64  # the critic's warm-up counts
    cold = meta_train(cartpole, tiny_ppo, config.model_copy(update={"critic_warmup": 0}), seed=0, init=general)
    assert cold.steps == 64 and "critic_warmup" not in cold.history[0]
