"""Fixtures of the RL tests: tiny PPO settings and a hand-made CartPole teacher."""

from __future__ import annotations

import pytest
import torch

from fanbu.rl.policy import PolicyMLP, build_policy
from fanbu.rl.ppo import PPOConfig
from fanbu.rl.variants import FAMILIES, Variant


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every RL test on one torch thread: tiny networks, and two runs in one test compute alike."""


@pytest.fixture
def tiny_ppo() -> PPOConfig:
    """PPO that finishes a rollout and an update in a fraction of a second."""
    return PPOConfig(total_steps=128, n_envs=1, n_steps=64, batch_size=32, n_epochs=2, policy={"hidden": [16]})


@pytest.fixture
def cartpole() -> list[Variant]:
    return FAMILIES["cartpole"].variants("train")


def balancing_teacher(gain: float = 20.0) -> PolicyMLP:
    """A CartPole controller as a policy: push right when ``angle + 0.5 * angular velocity > 0``."""
    policy = build_policy(4, 2, [4], "tanh", seed=0)
    with torch.no_grad():
        for layer in policy.linears():
            layer.weight.zero_()
            layer.bias.zero_()
        first, last = policy.linears()
        first.weight[0] = torch.tensor([0.0, 0.0, 1.0, 0.5]) * gain  # hidden unit 0 = tanh(gain * s)
        last.weight[:, 0] = torch.tensor([-gain, gain])  # logits (-g h, g h): action 1 when s > 0
    return policy
