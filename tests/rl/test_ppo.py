"""SB3 PPO with fanbu's policy as the artefact: the copied actor acts exactly as SB3's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fanbu.errors import ConfigError
from fanbu.rl.policy import new_policy
from fanbu.rl.ppo import PPOConfig, actor_of, load_actor, make_ppo, state_of, train_ppo
from fanbu.rl.variants import Variant


def test_copied_actor_acts_like_sb3(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    model = make_ppo(cartpole[:1], tiny_ppo, seed=0)
    model.learn(total_timesteps=64)  # trained a little, so the weights are not SB3's initial ones
    actor = actor_of(model)
    obs = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    theirs, _ = model.predict(obs, deterministic=True)
    mine = actor(torch.from_numpy(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(mine, theirs)


def test_policy_goes_into_sb3_and_back(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    model = make_ppo(cartpole[:1], tiny_ppo, seed=0)
    policy = new_policy(4, 2, tiny_ppo.policy, seed=9)
    load_actor(model, policy)
    back = actor_of(model)
    for a, b in zip(back.state_dict().values(), policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="do not match the PPO actor's"):
        load_actor(model, new_policy(4, 2, {"hidden": [32]}))
    with pytest.raises(ConfigError, match="the action spaces differ"):
        load_actor(model, new_policy(4, 3, tiny_ppo.policy))


def test_train_ppo_from_an_init_and_steps(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    init = state_of(make_ppo(cartpole[:1], tiny_ppo, seed=5))
    result = train_ppo(cartpole[:2], tiny_ppo, seed=1, init=init)
    assert result.steps >= tiny_ppo.total_steps
    assert any(not torch.equal(result.state[k], init[k]) for k in init)  # PPO moved the weights
    again = train_ppo(cartpole[:2], tiny_ppo, seed=1, init=init)
    assert all(torch.equal(again.state[k], result.state[k]) for k in init)  # same seed, same run


def test_stop_at_a_reached_target(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    calls = []

    def check(actor) -> float:
        calls.append(1)
        return 1.0

    reached = train_ppo(cartpole[:1], tiny_ppo, seed=0, stop=(check, 0.5, 32))
    assert reached.reached_at == 0 and reached.steps == 0 and reached.curve == [(0, 1.0)]
    never = train_ppo(cartpole[:1], tiny_ppo, seed=0, stop=(lambda actor: 0.0, 0.5, 32))
    assert never.reached_at is None and [s for s, _ in never.curve] == [0, 64, 128]  # after each update
    values = iter([0.0, 0.0, 1.0])
    later = train_ppo(cartpole[:1], tiny_ppo.model_copy(update={"total_steps": 1024}), seed=0,
                      stop=(lambda actor: next(values), 0.5, 32))
    assert later.reached_at == 128 and [s for s, _ in later.curve] == [0, 64, 128]
    assert later.steps < 1024  # training stopped at the target


def test_ppo_settings_are_checked(cartpole: list[Variant]) -> None:
    with pytest.raises(ValueError, match="batch_size 512 is larger than a rollout"):
        PPOConfig(n_envs=1, n_steps=64, batch_size=512)
    with pytest.raises(ConfigError, match="different environments"):
        make_ppo([cartpole[0], Variant("Acrobot-v1", "a")], PPOConfig(), seed=0)


def test_training_leaves_no_log_folder_behind(
    cartpole: list[Variant], tiny_ppo: PPOConfig, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # SB3's default logger would make SB3-<time> in here
    monkeypatch.setattr("tempfile.tempdir", None)
    train_ppo(cartpole, tiny_ppo, seed=0, total_steps=64)
    assert list(tmp_path.iterdir()) == []


def test_a_frozen_actor_keeps_its_weights_while_the_critic_learns(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    from fanbu.rl.ppo import actor_critic_state

    actor = new_policy(4, 2, {"hidden": [8, 8]}, seed=3)
    state, shaped = actor_critic_state(actor, cartpole[0], tiny_ppo, seed=0)
    assert shaped.policy.hidden == [8, 8] and tiny_ppo.policy.hidden == [16]
    result = train_ppo(cartpole, shaped, seed=0, total_steps=128, init=state, freeze_actor=True)
    obs = torch.randn(32, 4)
    assert torch.equal(result.actor(obs), actor(obs))  # the policy is exactly the one it started as
    critic = [k for k in state if "value" in k]
    assert critic and any(not torch.equal(result.state[k], state[k]) for k in critic)
