"""Small expert policies: one PPO run per training variant, all from one shared initialisation.

Every expert starts from the same actor-critic weights (drawn from the family's seed), so that the
swarm's weights stay comparable and can be merged (:mod:`fanbu.rl.merge`); each run has its own seed
for its environments and minibatches. A variant's experience stays with its expert: only the expert's
weights leave the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from fanbu.rl.ppo import PPOConfig, PPOResult, State, fresh_state, train_ppo
from fanbu.rl.variants import Variant


def run_seed(seed: int, index: int) -> int:
    """The PPO seed of the ``index``-th run of a family trained with ``seed`` (distinct per run)."""
    return 1000 * seed + 17 * (index + 1)


def shared_init(variants: Sequence[Variant], ppo: PPOConfig, seed: int) -> State:
    """The actor-critic weights every expert of the family starts from."""
    return fresh_state(variants[0], ppo, seed)


def train_experts(variants: Sequence[Variant], ppo: PPOConfig, seed: int = 0,
                  init: Mapping[str, Tensor] | None = None) -> dict[str, PPOResult]:
    """One PPO expert per variant, ``ppo.total_steps`` steps each, from ``init`` (default :func:`shared_init`)."""
    start = dict(init) if init is not None else shared_init(variants, ppo, seed)
    return {v.name: train_ppo([v], ppo, run_seed(seed, i), init=start) for i, v in enumerate(variants)}
