"""Reptile (first-order meta-learning) of a policy initialisation across the training variants.

Nichol, Achiam and Schulman 2018 (https://arxiv.org/abs/1803.02999): from the meta weights ``theta``,
train on one sampled variant for a few PPO steps to ``phi``, then move ``theta <- theta + eps * (phi -
theta)`` (with a batch of variants, toward the mean of their ``phi``), ``eps`` annealed linearly to
zero. The weights are the whole actor-critic, so that fine-tuning on a new variant starts with a critic
that already knows the family. :func:`reptile_step` is the update alone, on any state dicts.

Where it starts (``start``): from the family's **general** policy (the distilled one: the meta-init is a
meta-initialisation *of the general policy*, which already acts well across the family), or from the
experts' **shared** initialisation. A general policy comes without a critic, so a fresh critic of its
shape first learns the policy's values on the training variants with the actor frozen
(``critic_warmup`` steps); otherwise the first inner PPO runs would move the actor along the noise of
an untrained critic's advantages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.rl.policy import PolicyMLP
from fanbu.rl.ppo import PPOConfig, State, actor_critic_state, actor_from_state, fresh_state, train_ppo
from fanbu.rl.variants import Variant
from fanbu.train.anneal import linear_anneal


class ReptileConfig(Strict):
    """The outer loop of Reptile over the training variants (the inner loop is PPO)."""

    iterations: int = Field(20, ge=1, description="Meta iterations (outer steps).")
    inner_steps: int = Field(2048, ge=1, description="PPO environment steps per variant per iteration.")
    meta_batch: int = Field(2, ge=1, description="Variants adapted from the same theta per iteration.")
    step_size: float = Field(0.5, gt=0, le=1, description="eps at the first iteration.")
    final_step_size: float = Field(0.05, ge=0, le=1, description="eps at the last iteration (linear anneal).")
    start: Literal["general", "shared"] = Field("general", description="Start from the family's general "
                                                "(distilled) policy, or from the experts' shared initialisation.")
    critic_warmup: int = Field(4096, ge=0, description="Environment steps (over all training variants) in which "
                               "a general policy's fresh critic learns its values, the actor frozen; 0: none.")

    @model_validator(mode="after")
    def _check(self) -> ReptileConfig:
        if self.final_step_size > self.step_size:
            raise ValueError(f"final_step_size {self.final_step_size} exceeds step_size {self.step_size}; the "
                             "step size anneals down")
        return self

    def step_size_at(self, iteration: int) -> float:
        """eps of ``iteration`` (0-based), linear from ``step_size`` to ``final_step_size``."""
        return linear_anneal(self.step_size, self.final_step_size, iteration, self.iterations)


def reptile_step(theta: Mapping[str, Tensor], adapted: Sequence[Mapping[str, Tensor]], step_size: float) -> State:
    """``theta + step_size * (mean(adapted) - theta)`` for every floating tensor (others kept from theta)."""
    if not adapted:
        raise ConfigError("reptile: no adapted weights to step toward; adapt on at least one variant")
    for index, phi in enumerate(adapted):
        if set(phi) != set(theta) or any(phi[k].shape != theta[k].shape for k in theta):
            raise ConfigError(f"reptile: adapted weights {index} do not match the meta weights' names and shapes; "
                              "adapt copies of the same model")
    new: State = {}
    for key, value in theta.items():
        if not value.is_floating_point():
            new[key] = value.clone()
            continue
        mean = torch.stack([phi[key].float() for phi in adapted]).mean(dim=0)  # like value
        new[key] = (value.float() + step_size * (mean - value.float())).to(value.dtype)
    return new


@dataclass
class MetaResult:
    """The meta-learned actor-critic weights, its actor, the environment steps meta-training took (critic
    warm-up included), and the PPO settings of the weights' shape (fine-tune the state with these)."""

    state: State
    actor: PolicyMLP
    steps: int
    ppo: PPOConfig
    history: list[dict[str, object]] = field(default_factory=list)


def meta_train(variants: Sequence[Variant], ppo: PPOConfig, config: ReptileConfig, seed: int = 0,
               init: Mapping[str, Tensor] | PolicyMLP | None = None) -> MetaResult:
    """Reptile over ``variants`` with PPO as the inner loop, from ``init``: an actor-critic state, a policy
    (a general one: its critic is warmed up first, and the meta weights take its shape) or nothing (a fresh
    actor-critic of ``ppo.policy``'s shape)."""
    if not variants:
        raise ConfigError("reptile needs at least one training variant")
    rng = np.random.default_rng(seed)
    steps, history = 0, []
    if isinstance(init, PolicyMLP):
        theta, ppo = actor_critic_state(init, variants[0], ppo, seed)
        if config.critic_warmup:
            warm = train_ppo(variants, ppo, seed, total_steps=config.critic_warmup, init=theta, freeze_actor=True)
            theta, steps = warm.state, warm.steps
            history.append({"critic_warmup": warm.steps})
    else:
        theta = dict(init) if init is not None else fresh_state(variants[0], ppo, seed)
    for iteration in range(config.iterations):
        batch = rng.choice(len(variants), size=min(config.meta_batch, len(variants)), replace=False)
        adapted = []
        for index in batch:
            inner_seed = int(rng.integers(0, 2**31 - 1))
            result = train_ppo([variants[int(index)]], ppo, inner_seed, total_steps=config.inner_steps, init=theta)
            adapted.append(result.state)
            steps += result.steps
        eps = config.step_size_at(iteration)
        theta = reptile_step(theta, adapted, eps)
        history.append({"iteration": iteration, "variants": [variants[int(i)].name for i in batch], "eps": eps})
    return MetaResult(theta, actor_from_state(theta, variants[0], ppo), steps, ppo, history)
