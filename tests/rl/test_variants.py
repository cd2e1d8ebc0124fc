"""Environment variants: the physics parameters really change the dynamics; bad settings are explained."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.rl.variants import ENVS, FAMILIES, FamilySpec, Variant

ACTIONS = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1]


def _trajectory(variant: Variant, actions: list[int], seed: int = 3) -> np.ndarray:
    env = variant.make()
    obs, _ = env.reset(seed=seed)
    states = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        states.append(obs)
    env.close()
    return np.stack(states)  # (steps + 1, obs_dim)


@pytest.mark.parametrize("params", [{"pole_half_length": 0.9}, {"pole_mass": 0.3}, {"cart_mass": 2.0},
                                    {"gravity": 5.0}, {"force_mag": 5.0}])
def test_cartpole_parameters_change_the_dynamics(params: dict[str, float]) -> None:
    plain = _trajectory(Variant("CartPole-v1", "plain"), ACTIONS)
    changed = _trajectory(Variant("CartPole-v1", "changed", params), ACTIONS)
    np.testing.assert_array_equal(plain[0], changed[0])  # same seed, same start
    assert not np.allclose(plain[1:], changed[1:]), f"{params} left the dynamics unchanged"


def test_default_variant_is_gymnasiums_env() -> None:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    expected = [obs] + [env.step(a)[0] for a in ACTIONS]
    np.testing.assert_array_equal(np.stack(expected), _trajectory(Variant("CartPole-v1", "plain"), ACTIONS))


def test_cartpole_derived_attributes_follow_the_masses() -> None:
    env = Variant("CartPole-v1", "heavy", {"pole_mass": 0.3, "cart_mass": 1.5, "pole_half_length": 0.8}).make()
    inner = env.unwrapped
    assert inner.total_mass == pytest.approx(1.8)
    assert inner.polemass_length == pytest.approx(0.3 * 0.8)


@pytest.mark.parametrize("params", [{"link_mass_1": 1.5}, {"link_mass_2": 0.5}, {"link_length_1": 1.3}])
def test_acrobot_parameters_change_the_dynamics(params: dict[str, float]) -> None:
    actions = [0, 2, 2, 1, 0, 2, 0, 0]
    plain = _trajectory(Variant("Acrobot-v1", "plain"), actions)
    changed = _trajectory(Variant("Acrobot-v1", "changed", params), actions)
    np.testing.assert_array_equal(plain[0], changed[0])
    assert not np.allclose(plain[1:], changed[1:])


def test_every_declared_parameter_is_an_attribute_of_the_env() -> None:
    for env_id, kind in ENVS.items():
        inner = Variant(env_id, "plain").make().unwrapped
        for name, parameter in kind.parameters.items():
            assert isinstance(getattr(inner, parameter.attribute), float), (env_id, name)


def test_unknown_parameter_names_it_and_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"variant 'v': CartPole-v1 has no parameter 'pole_colour'; valid "
                                          r"parameters: cart_mass, force_mag, gravity, pole_half_length, pole_mass"):
        Variant("CartPole-v1", "v", {"pole_colour": 1.0})


def test_unknown_env_id() -> None:
    with pytest.raises(ConfigError, match=r"env_id 'CartPole-v9' is not an environment fanbu makes variants of; "
                                          r"use one of Acrobot-v1, CartPole-v1"):
        Variant("CartPole-v9", "v")


def test_family_errors_name_the_field() -> None:
    good = FAMILIES["cartpole"].model_dump()
    with pytest.raises(ConfigError, match=r"env_id 'MountainCar-v0' is not an environment"):
        validate(FamilySpec, {**good, "env_id": "MountainCar-v0"})
    bad = {**good, "train": [{"name": "x", "params": {"link_mass_1": 2.0}}]}
    with pytest.raises(ConfigError, match=r"CartPole-v1 has no parameter 'link_mass_1'"):
        validate(FamilySpec, bad)
    twice = {**good, "held_out": [{"name": good["train"][0]["name"]}]}
    with pytest.raises(ConfigError, match="appear twice"):
        validate(FamilySpec, twice)
    with pytest.raises(ConfigError, match="must be a positive number"):
        validate(FamilySpec, {**good, "train": [{"name": "x", "params": {"gravity": -9.8}}]})


def test_built_in_families_hold_four_training_and_two_held_out_variants() -> None:
    for spec in FAMILIES.values():
        assert len(spec.variants("train")) == 4 and len(spec.variants("held_out")) == 2
        fingerprints = {v.fingerprint for v in spec.variants("all")}
        assert len(fingerprints) == 6  # every variant is a distinct environment
    with pytest.raises(ConfigError, match="which='test'"):
        FAMILIES["cartpole"].variants("test")
