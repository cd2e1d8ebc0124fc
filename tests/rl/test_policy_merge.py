"""Uniform weight averaging of same-shaped expert policies."""

from __future__ import annotations

import pytest
import torch

from fanbu.errors import ConfigError
from fanbu.feedback.strategies.merge import MergeConfig
from fanbu.rl.merge import merge_policies
from fanbu.rl.policy import new_policy


def test_uniform_average_is_the_mean_of_the_weights() -> None:
    experts = {f"v{i}": new_policy(4, 2, {"hidden": [8]}, seed=i) for i in range(3)}
    merged = merge_policies(experts)
    for key, value in merged.state_dict().items():
        expected = torch.stack([e.state_dict()[key] for e in experts.values()]).mean(0)
        assert torch.allclose(value, expected, atol=1e-6), key


def test_task_arithmetic_against_the_shared_init() -> None:
    base = new_policy(4, 2, {"hidden": [8]}, seed=0)
    experts = {f"v{i}": new_policy(4, 2, {"hidden": [8]}, seed=i + 1) for i in range(2)}
    merged = merge_policies(experts, base=base, config=MergeConfig(method="task_arithmetic", normalize=False))
    for key, value in merged.state_dict().items():
        delta = sum(e.state_dict()[key] - base.state_dict()[key] for e in experts.values())
        assert torch.allclose(value, base.state_dict()[key] + delta, atol=1e-6)
    with pytest.raises(ConfigError, match="pass base="):
        merge_policies(experts, config=MergeConfig(method="ties"))


def test_different_architectures_are_refused() -> None:
    experts = {"a": new_policy(4, 2, {"hidden": [8]}), "b": new_policy(4, 2, {"hidden": [16]})}
    with pytest.raises(ConfigError, match="expert 'b' is .* but 'a' is .*; weight merging needs one architecture"):
        merge_policies(experts)
    with pytest.raises(ConfigError, match="no expert policies"):
        merge_policies({})
