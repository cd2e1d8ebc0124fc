"""Fast adaptation: environment steps of PPO fine-tuning until a policy reaches a return target.

From an initialisation (a Reptile meta-init's actor-critic, a distilled general policy's actor, or
nothing: scratch), PPO trains on one held-out variant; every ``eval_every`` steps the greedy actor plays
the variant's ``gate`` episodes, and the count stops at the first mean return at or above the target
(usually 90% of the way from a random policy to the variant's expert, see
:func:`fanbu.rl.evaluate.target_return`). A run that never gets there within ``max_steps`` reports
``None`` (censored: the bench counts it as ``max_steps`` and says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import Field
from torch import Tensor

from fanbu.config import Strict
from fanbu.rl.evaluate import evaluate_policy
from fanbu.rl.policy import PolicyMLP
from fanbu.rl.ppo import PPOConfig, train_ppo
from fanbu.rl.variants import Variant


class AdaptationConfig(Strict):
    """How steps-to-target is measured on a held-out variant."""

    max_steps: int = Field(50_000, ge=1, description="Give up after this many environment steps.")
    eval_every: int = Field(2048, ge=1, description="Environment steps between two checks of the return.")
    eval_episodes: int = Field(5, ge=1, description="Gate episodes per check.")
    fraction: float = Field(0.9, gt=0, le=1, description="Target: this share of the way from a random "
                            "policy's return to the expert's.")
    learning_rate: float | None = Field(None, gt=0, description="PPO's learning rate while adapting (the same for "
                                        "every initialisation); null: ppo.learning_rate.")


@dataclass
class Adaptation:
    """Steps to the target (``None``: not reached within ``max_steps``) and the curve of checks."""

    variant: str
    target: float
    steps: int | None
    curve: list[tuple[int, float]] = field(default_factory=list)


def steps_to_target(variant: Variant, init: Mapping[str, Tensor] | PolicyMLP | None, target: float,
                    ppo: PPOConfig, config: AdaptationConfig, seed: int = 0, eval_seed: int | None = None) -> Adaptation:
    """PPO on ``variant`` from ``init`` until the greedy return reaches ``target``; the steps it took.

    ``seed`` seeds PPO; ``eval_seed`` (default ``seed``) picks the gate episodes of the checks.
    """
    episodes_seed = seed if eval_seed is None else eval_seed

    def check(actor: PolicyMLP) -> float:
        return evaluate_policy(actor, variant, config.eval_episodes, split="gate", seed=episodes_seed).mean

    if config.learning_rate is not None:
        ppo = ppo.model_copy(update={"learning_rate": config.learning_rate})
    result = train_ppo([variant], ppo, seed, total_steps=config.max_steps, init=init,
                       stop=(check, target, config.eval_every))
    return Adaptation(variant.name, target, result.reached_at, result.curve)
