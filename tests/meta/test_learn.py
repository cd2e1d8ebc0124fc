"""FOMAML and Reptile: the meta-gradient against finite differences, the Reptile step, a short run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fanbu.meta.adapt import AdaptConfig, adapt, choose_lr
from fanbu.meta.episodes import sample_episode, stack_episodes
from fanbu.meta.learn import (
    RATE,
    MetaConfig,
    fomaml_gradient,
    log_rates,
    meta_train,
    metasgd_gradient,
    reptile_adapted,
    reptile_step,
)
from fanbu.meta.network import adapt_params, body_params, loss, new_body


def test_fomaml_gradient_matches_finite_differences(tasks, one_thread) -> None:
    body = new_body(12, 5, seed=0).double()
    theta = body_params(body)
    episode = sample_episode(tasks[0], 3, 3, 4, np.random.default_rng(0))
    episode = type(episode)(episode.support_x.double(), episode.support_y, episode.query_x.double(), episode.query_y)
    grads, _ = fomaml_gradient(body, theta, stack_episodes([episode]), 3, lr=0.3, steps=3)
    phi = adapt_params(body, theta, 3, episode.support_x, episode.support_y, 0.3, 3)
    eps = 1e-6
    for name in ("proj.weight", "proj.bias"):
        flat = phi[name].reshape(-1)
        for i in (0, flat.numel() // 2, flat.numel() - 1):
            bump = torch.zeros_like(flat)
            bump[i] = eps
            up = {**phi, name: (flat + bump).reshape(phi[name].shape)}
            down = {**phi, name: (flat - bump).reshape(phi[name].shape)}
            numeric = (loss(body, up, episode.query_x, episode.query_y)
                       - loss(body, down, episode.query_x, episode.query_y)) / (2 * eps)
            assert float(grads[name].reshape(-1)[i]) == pytest.approx(float(numeric), abs=1e-7)


def test_reptile_step_moves_toward_the_adapted_weights(tasks, one_thread) -> None:
    body = new_body(12, 6, seed=0)
    theta = body_params(body)
    batch = stack_episodes([sample_episode(tasks[1], 4, 3, 3, np.random.default_rng(i)) for i in range(2)])
    adapted = reptile_adapted(body, theta, batch, 4, lr=0.5, steps=4)
    new = reptile_step(theta, adapted, 0.25)
    for name, value in theta.items():
        target = adapted[name].mean(dim=0)
        before, after = (target - value).norm(), (target - new[name]).norm()
        assert float(before) > 0
        assert float(after) == pytest.approx(0.75 * float(before), rel=1e-5)
        assert torch.allclose(new[name], value + 0.25 * (target - value))


@pytest.mark.parametrize("method", ["fomaml", "reptile", "metasgd"])
def test_meta_training_lowers_the_loss_of_adapted_heads(tasks, one_thread, method) -> None:
    config = MetaConfig(method=method, hidden=8, k_shot=3, query=3, iterations=15, meta_batch=2, inner_steps=2,
                        meta_lr=1e-2)
    result = meta_train(tasks[:2], config)
    assert result.domains == ["a", "b"] and len(result.history) == 15
    start = new_body(12, 8, seed=0)
    assert any(not torch.equal(p, q) for p, q in zip(result.body.parameters(), start.parameters(), strict=True))
    new = tasks[2]
    adapted = adapt(result.body, new.features[::3], new.labels[::3], 3, lr=0.3, steps=10)
    assert adapted.predict_proba(new.features).shape == (len(new.labels), 3)
    assert float((torch.from_numpy(adapted.predict(new.features)) == new.labels).float().mean()) > 0.5


def test_choose_lr_reads_only_the_given_domains(tasks, one_thread) -> None:
    body = new_body(12, 8, seed=0)
    config = AdaptConfig(steps=3, lr_grid=[0.01, 0.5], selection_episodes=2, selection_query=3)
    chosen = choose_lr(body, [(tasks[0], tasks[0])], [2, 4], config, seed=0)
    assert set(chosen) == {2, 4}
    assert all(c["lr"] in (0.01, 0.5) and set(c["scores"]) == {"0.01", "0.5"} for c in chosen.values())


def test_config_validators_name_the_field() -> None:
    with pytest.raises(ValueError, match="final_step_size"):
        MetaConfig(step_size=0.1, final_step_size=0.2)
    with pytest.raises(ValueError, match="inner='all'"):
        MetaConfig(method="reptile", inner="head")
    with pytest.raises(ValueError, match="lr_grid"):
        AdaptConfig(lr_grid=[0.1, -1.0])


def test_metasgd_gradient_of_the_rates_matches_finite_differences(tasks, one_thread) -> None:
    """Meta-SGD differentiates the query loss through the inner loop, rates included."""
    body = new_body(12, 5, seed=0).double()
    params = {**body_params(body), **{k: v.double() + 0.1 for k, v in log_rates(body_params(body), 5).items()}}
    episode = sample_episode(tasks[0], 3, 3, 4, np.random.default_rng(0))
    episode = type(episode)(episode.support_x.double(), episode.support_y, episode.query_x.double(), episode.query_y)
    grads, _ = metasgd_gradient(body, params, stack_episodes([episode]), 3, lr=0.3, steps=2)

    def query_loss(p):
        theta = {k: v for k, v in p.items() if not k.startswith(RATE)}
        rates = {k[len(RATE):]: 0.3 * v.exp() for k, v in p.items() if k.startswith(RATE)}
        phi = adapt_params(body, theta, 3, episode.support_x, episode.support_y, rates, 2)
        return float(loss(body, phi, episode.query_x, episode.query_y))

    eps = 1e-6
    for name in (RATE + "proj.weight", RATE + "head.weight", RATE + "head.bias", "proj.bias"):
        flat = params[name].reshape(-1)
        for i in {0, flat.numel() - 1}:
            bump = torch.zeros_like(flat)
            bump[i] = eps
            up = {**params, name: (flat + bump).reshape(params[name].shape)}
            down = {**params, name: (flat - bump).reshape(params[name].shape)}
            numeric = (query_loss(up) - query_loss(down)) / (2 * eps)
            assert float(grads[name].reshape(-1)[i]) == pytest.approx(numeric, abs=1e-7)


def test_a_metasgd_body_adapts_with_its_learned_rate_profile(tasks, one_thread) -> None:
    config = MetaConfig(method="metasgd", hidden=8, k_shot=3, query=3, iterations=10, meta_batch=2, inner_steps=2,
                        meta_lr=5e-2)
    body = meta_train(tasks[:2], config).body
    profile = body.rate_profile()
    assert set(profile) == {"proj.weight", "proj.bias", "head.weight", "head.bias"}
    assert all(bool((v > 0).all()) for v in profile.values())
    assert any(not torch.allclose(v, torch.ones_like(v)) for v in profile.values())  # learned, not ones
    new = tasks[2]
    x, y = new.features[::3], new.labels[::3]
    learned = adapt(body, x, y, 3, lr=0.3, steps=3)
    plain = new_body(12, 8, seed=0)
    plain.load_state_dict({k: v for k, v in body.state_dict().items() if not k.startswith("rates.")})
    uniform = adapt(plain, x, y, 3, lr=0.3, steps=3)  # the same weights at one rate: a different model
    assert not np.allclose(learned.predict_proba(new.features), uniform.predict_proba(new.features))
    body.set_rate_profile({k: torch.ones_like(v) for k, v in profile.items()})
    assert np.allclose(adapt(body, x, y, 3, lr=0.3, steps=3).predict_proba(new.features),
                       uniform.predict_proba(new.features), atol=1e-6)
