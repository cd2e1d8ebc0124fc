"""Weight merging of expert policies that share one architecture, through the feedback merge.

The experts' weights are combined by :func:`fanbu.feedback.strategies.merge.merge_states` (PEFT's
merge utilities): ``average`` is the uniform mean; ``task_arithmetic``, ``ties`` and the DARE methods
take task vectors against ``base``, the initialisation the experts share (fanbu trains every expert of
a family from the same initial weights, so that their weights are comparable at all).
"""

from __future__ import annotations

from collections.abc import Mapping

from fanbu.errors import ConfigError
from fanbu.feedback.strategies.merge import MergeConfig, merge_states
from fanbu.rl.policy import PolicyMLP, build_policy, policy_config


def check_same_architecture(experts: Mapping[str, PolicyMLP], base: PolicyMLP | None = None) -> dict:
    """The experts' (and base's) common architecture config, or a ConfigError naming the one that differs."""
    if not experts:
        raise ConfigError("merge: no expert policies to merge; train at least one expert")
    named = dict(experts) if base is None else {"(base)": base, **experts}
    first_name, first = next(iter(named.items()))
    shape = policy_config(first)
    for name, policy in named.items():
        if policy_config(policy) != shape:
            raise ConfigError(
                f"merge: expert {name!r} is {policy_config(policy)} but {first_name!r} is {shape}; weight merging "
                "needs one architecture (use distillation for experts of different shapes)"
            )
    return shape


def merge_policies(experts: Mapping[str, PolicyMLP], base: PolicyMLP | None = None,
                   config: MergeConfig | None = None, seed: int = 0) -> PolicyMLP:
    """One policy from the experts' weights; ``average`` (the default) is their uniform mean."""
    config = config or MergeConfig(method="average")
    shape = check_same_architecture(experts, base)
    if base is None:
        if config.method != "average":
            raise ConfigError(f"merge: method {config.method!r} takes task vectors against the experts' shared "
                              "initialisation; pass base=, or use method: average")
        base = next(iter(experts.values()))  # the mean does not depend on the base
    names = sorted(experts)
    weights = [1.0 if config.weights is None else config.weights.get(n, 1.0) for n in names]
    state = merge_states(base.state_dict(), [experts[n].state_dict() for n in names], weights, config, seed)
    merged = build_policy(**shape)
    merged.load_state_dict(state)
    return merged
