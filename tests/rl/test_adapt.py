"""Steps-to-target: PPO from an initialisation until the greedy return reaches a target."""

from __future__ import annotations

import pytest

from fanbu.rl import adapt
from fanbu.rl.adapt import AdaptationConfig, steps_to_target
from fanbu.rl.ppo import PPOConfig
from fanbu.rl.variants import Variant

from .conftest import balancing_teacher


def test_a_policy_already_at_the_target_needs_no_steps(cartpole: list[Variant], tiny_ppo: PPOConfig) -> None:
    config = AdaptationConfig(max_steps=64, eval_every=32, eval_episodes=2)
    done = steps_to_target(cartpole[0], balancing_teacher(), 400.0, tiny_ppo, config)
    assert done.steps == 0 and done.curve[0][1] >= 400
    never = steps_to_target(cartpole[0], None, 10_000.0, tiny_ppo, config)  # above CartPole's 500 cap
    assert never.steps is None and [s for s, _ in never.curve] == [0, 64]  # after the one update


def test_adaptation_learning_rate_replaces_ppos(monkeypatch: pytest.MonkeyPatch, cartpole: list[Variant],
                                               tiny_ppo: PPOConfig) -> None:
    seen = []

    def fake(variants, ppo, seed, **kwargs):
        seen.append(ppo.learning_rate)
        raise RuntimeError("stop here")

    monkeypatch.setattr(adapt, "train_ppo", fake)
    for rate in (None, 1e-5):
        with pytest.raises(RuntimeError, match="stop here"):
            steps_to_target(cartpole[0], None, 1.0, tiny_ppo, AdaptationConfig(learning_rate=rate))
    assert seen == [tiny_ppo.learning_rate, 1e-5]
