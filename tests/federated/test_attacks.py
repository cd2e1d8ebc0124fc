"""The attack simulator: who is malicious, and what each attack sends."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.federated.attacks import (
    AttackConfig,
    attack_arrays,
    attack_logits,
    boosts_update,
    flip_labels,
    malicious_ids,
    num_malicious,
)


@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(10, 0.2, 2), (20, 0.2, 4), (7, 0.2, 1), (5, 0.5, 3)]
)
def test_the_right_number_of_clients_turns_malicious(n, fraction, expected):
    ids = [f"client-{i}" for i in range(n)]
    bad = malicious_ids(ids, AttackConfig(kind="sign_flip", fraction=fraction, seed=3))
    assert len(bad) == expected == num_malicious(n, fraction)
    assert bad <= set(ids)


def test_the_choice_is_deterministic_and_ignores_the_order_of_ids():
    ids = list(range(30))
    config = AttackConfig(kind="label_flip", fraction=0.3, seed=11)
    first = malicious_ids(ids, config)
    assert malicious_ids(list(reversed(ids)), config) == first
    assert malicious_ids(ids, config.model_copy(update={"seed": 12})) != first
    assert malicious_ids(ids, AttackConfig(kind="none", fraction=0.3)) == set()


def test_fraction_and_kind_are_validated_and_ids_must_be_unique():
    with pytest.raises(ConfigError, match="fraction"):
        validate(AttackConfig, {"kind": "sign_flip", "fraction": 1.5})
    with pytest.raises(ConfigError, match="kind"):
        validate(AttackConfig, {"kind": "poison_everything"})
    with pytest.raises(ConfigError, match="unique"):
        malicious_ids([1, "1"], AttackConfig(kind="sign_flip", fraction=0.5))


def test_flip_labels_changes_every_label_and_stays_in_range():
    labels = [0, 1, 2, 3, 4] * 40
    flipped = flip_labels(labels, 5, np.random.default_rng(0))
    assert all(a != b for a, b in zip(labels, flipped, strict=True))
    assert set(flipped) <= set(range(5))
    assert flip_labels(labels, 5, np.random.default_rng(0)) == flipped  # seeded
    assert len(set(zip(labels, flipped, strict=True))) > 10  # random targets, not one fixed permutation
    with pytest.raises(ConfigError, match="labels must lie"):
        flip_labels([0, 7], 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="at least 2"):
        flip_labels([0], 1, np.random.default_rng(0))


def test_sign_flip_and_scaled_replacement_follow_their_formulas():
    g = [np.ones((2, 3), dtype=np.float32), np.zeros(4, dtype=np.float32), np.arange(3)]
    w = [np.full((2, 3), 1.5, dtype=np.float32), np.full(4, -1.0, dtype=np.float32), np.arange(3) + 1]
    flipped = attack_arrays("sign_flip", g, w, 2.0)
    np.testing.assert_allclose(flipped[0], 1 - 2 * 0.5)
    np.testing.assert_allclose(flipped[1], 2.0)
    replaced = attack_arrays("scaled_replacement", g, w, 10.0)
    np.testing.assert_allclose(replaced[0], 1 + 10 * 0.5)
    np.testing.assert_allclose(replaced[1], -10.0)
    assert flipped[0].dtype == np.float32
    np.testing.assert_array_equal(replaced[2], w[2])  # integer buffers are left alone
    untouched = attack_arrays("garbage_logits", g, w, 10.0)  # acts on logits, not on the arrays
    assert all(np.array_equal(a, b) for a, b in zip(untouched, w, strict=True))
    assert untouched[0] is not w[0]


def test_default_scale_is_the_number_of_clients_for_model_replacement():
    assert AttackConfig(kind="scaled_replacement").resolved_scale(12) == 12.0
    assert AttackConfig(kind="sign_flip").resolved_scale(12) == 1.0
    assert AttackConfig(kind="sign_flip", scale=4).resolved_scale(12) == 4.0


def test_model_replacement_with_n_times_the_update_replaces_the_fedavg_mean():
    n, g = 10, np.zeros(6)
    honest = [g + 0.01 * i for i in range(n - 1)]  # near the global model
    target = np.full(6, 3.0)  # the attacker's model
    sent = attack_arrays(
        "scaled_replacement", [g], [target], AttackConfig(kind="scaled_replacement").resolved_scale(n)
    )
    mean = (sum(honest) + sent[0]) / n
    np.testing.assert_allclose(mean, target, atol=0.05)


def test_garbage_logits_are_large_random_and_shaped_like_the_honest_ones():
    honest = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)  # (samples, classes)
    config = AttackConfig(kind="garbage_logits", fraction=0.2, seed=5)
    garbage = attack_logits(honest, config.rng("c1"), config.logit_magnitude)
    assert garbage.shape == honest.shape and garbage.dtype == np.float32
    assert np.abs(garbage).mean() > 20 * np.abs(honest).mean()
    np.testing.assert_array_equal(garbage, attack_logits(honest, config.rng("c1"), config.logit_magnitude))
    assert not np.array_equal(garbage, attack_logits(honest, config.rng("c2"), config.logit_magnitude))


def test_a_boosted_label_flip_scales_its_update_and_an_unboosted_one_does_not():
    assert not boosts_update(AttackConfig(kind="label_flip", fraction=0.2))
    boosted = AttackConfig(kind="label_flip", fraction=0.2, scale=10.0)
    assert boosts_update(boosted) and boosts_update(AttackConfig(kind="sign_flip", fraction=0.2))
    assert not boosts_update(AttackConfig(kind="garbage_logits", fraction=0.2, scale=3.0))
    g, w = np.zeros(3), np.array([1.0, -2.0, 0.5])
    (sent,) = attack_arrays("label_flip", [g], [w], boosted.resolved_scale(15))
    np.testing.assert_allclose(sent, 10.0 * w)  # global + scale * (local - global), explicit boosting
