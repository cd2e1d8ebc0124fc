"""Multi-teacher DAgger distillation: the student's agreement with the experts rises."""

from __future__ import annotations

import pytest

from fanbu.errors import ConfigError
from fanbu.rl.distill import DistillConfig, distill_policies
from fanbu.rl.evaluate import evaluate_policy
from fanbu.rl.policy import new_policy
from fanbu.rl.variants import Variant

from .conftest import balancing_teacher

CONFIG = DistillConfig(rounds=4, steps_per_variant=400,
                       train={"epochs": 8, "batch_size": 64, "lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0,
                              "schedule": "constant", "progress": False, "restore_best": False})


def test_students_agreement_with_the_experts_rises(cartpole: list[Variant]) -> None:
    variants = cartpole[:2]
    teachers = {v.name: balancing_teacher(gain) for v, gain in zip(variants, (20.0, 10.0), strict=True)}
    student = new_policy(4, 2, {"hidden": [32, 32]}, seed=4)
    result = distill_policies(student, teachers, variants, CONFIG, seed=0)
    before = sum(result.rounds[0].values()) / len(variants)  # the untrained student on the experts' states
    after = sum(result.final.values()) / len(variants)  # the student alone, after distillation
    assert after > before + 0.2 and after > 0.85, (result.rounds, result.final)
    assert result.states == CONFIG.rounds * CONFIG.steps_per_variant * len(variants)
    assert evaluate_policy(student, variants[0], 2).mean > 150  # it balances the pole, as its teacher does


def test_action_space_mismatch_is_a_clear_error(cartpole: list[Variant]) -> None:
    variant = cartpole[0]
    acrobot_expert = new_policy(6, 3)
    with pytest.raises(ConfigError, match=rf"expert '{variant.name}' has 3 actions but the student has 2: the "
                                          "action spaces differ"):
        distill_policies(new_policy(4, 2), {variant.name: acrobot_expert}, [variant], CONFIG)
    with pytest.raises(ConfigError, match="the student has 3 actions but variant .* has 2"):
        distill_policies(new_policy(4, 3), {variant.name: new_policy(4, 3)}, [variant], CONFIG)


def test_every_variant_needs_its_expert(cartpole: list[Variant]) -> None:
    with pytest.raises(ConfigError, match=r"no expert for variants \['cartpole-long-pole'\]"):
        distill_policies(new_policy(4, 2), {cartpole[0].name: balancing_teacher()}, cartpole[:2], CONFIG)
