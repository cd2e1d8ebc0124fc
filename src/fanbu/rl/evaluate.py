"""Returns of a policy on a variant: the mean over seeded episodes, on a named split of episode seeds.

Episode seeds are split like data: ``gate`` seeds serve choices (the gate, adaptation's stopping test),
``test`` seeds serve the report, and no training rollout uses either (training seeds its own
environments from the run's seed, below :data:`SPLIT_OFFSETS`' ranges). Actions are greedy (argmax of
the logits), so a return is a property of the weights, not of sampling.

The return targets are read against a floor: a uniformly random policy's return on the same variant
and seeds (:func:`random_return`), so that "90% of the expert" means 90% of the way from random to
the expert (:func:`normalized`), which is meaningful for Acrobot's negative returns as for CartPole's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fanbu.errors import ConfigError
from fanbu.rl.policy import PolicyMLP, check_compatible, env_sizes
from fanbu.rl.variants import Variant

#: First episode seed of each split; run seed ``s`` uses ``offset + 10_000 * s + episode``. With ``s`` below
#: :data:`MAX_SEED` and fewer than 10,000 episodes, the splits never share a seed, and training (which
#: seeds below 2**31) never uses one of theirs.
SPLIT_OFFSETS: dict[str, int] = {"gate": 10**12, "test": 2 * 10**12}
MAX_SEED = 10**7

Actor = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class Returns:
    """The undiscounted return of each evaluation episode, and their mean."""

    returns: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.returns)


def episode_seeds(split: str, episodes: int, seed: int = 0) -> list[int]:
    """The reset seeds of ``episodes`` episodes of ``split`` for run seed ``seed``."""
    if split not in SPLIT_OFFSETS:
        raise ConfigError(f"episode split {split!r}: use one of {', '.join(SPLIT_OFFSETS)}")
    if not 1 <= episodes <= 10_000:
        raise ConfigError(f"episodes={episodes}: evaluate between 1 and 10,000 episodes")
    if not 0 <= seed < MAX_SEED:
        raise ConfigError(f"seed={seed}: evaluation seeds run from 0 to {MAX_SEED - 1}")
    start = SPLIT_OFFSETS[split] + 10_000 * seed
    return [start + i for i in range(episodes)]


def run_episodes(actor: Actor, variant: Variant, seeds: list[int], env: Any | None = None) -> Returns:
    """Play one episode per reset seed with ``actor``; the returns."""
    env = env if env is not None else variant.make()
    returns = []
    try:
        for reset_seed in seeds:
            obs, _ = env.reset(seed=reset_seed)
            env.action_space.seed(reset_seed)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(actor(obs))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return Returns(tuple(returns))


def evaluate_policy(policy: PolicyMLP, variant: Variant, episodes: int, split: str = "test",
                    seed: int = 0) -> Returns:
    """Greedy returns of ``policy`` on ``variant`` over ``episodes`` episodes of ``split``."""
    env = variant.make()
    check_compatible(policy, *env_sizes(env), what="the policy", against=f"variant {variant.name!r}")
    policy.eval()
    return run_episodes(policy.act, variant, episode_seeds(split, episodes, seed), env)


def random_return(variant: Variant, episodes: int, split: str = "test", seed: int = 0) -> Returns:
    """Returns of uniformly random actions on the same episodes (the floor of :func:`normalized`)."""
    env = variant.make()
    return run_episodes(lambda _obs: int(env.action_space.sample()), variant,
                        episode_seeds(split, episodes, seed), env)


def normalized(value: float, floor: float, expert: float) -> float:
    """Where ``value`` lies from ``floor`` (0) to ``expert`` (1): ``(value - floor) / (expert - floor)``.

    Raises:
        ConfigError: the expert is no better than random on this variant (train it longer).
    """
    if expert - floor <= 1e-9:
        raise ConfigError(f"the expert's return {expert:.1f} is not above a random policy's {floor:.1f}; "
                          "train the experts longer (ppo.total_steps) before comparing against them")
    return (value - floor) / (expert - floor)


def target_return(floor: float, expert: float, fraction: float = 0.9) -> float:
    """The return ``fraction`` of the way from random to the expert."""
    return floor + fraction * (expert - floor)
