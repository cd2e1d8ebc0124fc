"""FedAvg / FedProx through the ServerApp and ClientApp: rounds improve a toy task; bad input is refused.

Most runs use the in-process :class:`~conftest.LocalGrid` (the apps' logic, in seconds); one runs the
same apps under Flower's simulation runtime (Ray), and ``test_deployment`` under a real SuperLink.
"""

from __future__ import annotations

import pytest
import torch
from conftest import federate_local, make_recipe, one_thread

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.federated.local import ProximalTerm, shared_model, trainable_arrays
from fanbu.federated.recipe import FederatedRecipe, SharingConfig
from fanbu.federated.run import federate
from fanbu.federated.settings import parse_run_config
from fanbu.train.terms import Batch


def gain(result) -> float:
    """Validation mean accuracy after the last round minus before the first."""
    return result.rounds[-1]["val.mean_acc"] - result.rounds[0]["val.mean_acc"]


def changed(before, after) -> bool:
    old, new = before.model.state_dict(), after.model.state_dict()
    return any(not torch.equal(old[k], new[k]) for k in old)


def test_fedavg_rounds_improve_the_large_model_and_the_clients(toy_files, large_v0, tmp_path):
    result = federate_local(make_recipe(toy_files, algorithm="fedavg"), large_v0, tmp_path)
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert gain(result) >= 0.1, result.rounds
    assert changed(large_v0, result.large)
    assert sorted(result.clients) == ["health-0", "tech-0"]
    assert result.clients_mean("acc-after") > result.clients_mean("acc-before")
    assert result.seconds_per_round() > 0


def test_fedprox_with_lora_on_non_iid_clients(toy_files, large_v0, tmp_path):
    recipe = make_recipe(
        toy_files,
        algorithm="fedprox",
        proximal_mu=0.01,
        share={"mode": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        partition={"clients_per_domain": 2, "alpha": 0.5, "min_examples": 8},
        local=make_recipe(toy_files).local.model_copy(update={"lr": 1e-2}).model_dump(),
    )
    result = federate_local(recipe, large_v0, tmp_path)
    assert gain(result) >= 0.05, result.rounds
    assert not hasattr(result.large.model.encoder, "peft_config"), "the final large model is merged"
    assert changed(large_v0, result.large)
    assert len(result.client_metrics) == 4


def test_lora_exchanges_only_adapters_and_heads(large_v0):
    model = shared_model(large_v0, SharingConfig(mode="lora"), seed=0)
    names = list(trainable_arrays(model.model))
    assert names and all("lora_" in n or n.startswith("heads.") for n in names)
    assert sum(a.size for a in trainable_arrays(model.model).values()) < sum(
        p.numel() for p in large_v0.model.parameters()
    )


def test_proximal_term_is_zero_at_the_global_weights_and_grows_away_from_them(large_v0):
    model = shared_model(large_v0, SharingConfig(), seed=0).model
    term = ProximalTerm(model, mu=0.5)
    batch = Batch({"input_ids": torch.zeros(1, 2, dtype=torch.long)}, task="tech")
    outputs = {"logits": torch.zeros(1, 3)}
    assert term.losses(outputs, batch, model)["proximal"].item() == 0.0
    with torch.no_grad():
        model.heads["tech"].bias.add_(1.0)  # ||delta||^2 = 3
    assert term.losses(outputs, batch, model)["proximal"].item() == pytest.approx(0.25 * 3)


def test_median_survives_a_scaled_replacement_attacker(toy_files, large_v0, tmp_path):
    recipe = make_recipe(
        toy_files,
        partition={"clients_per_domain": 2},
        attack={"kind": "scaled_replacement", "fraction": 0.25, "scale": 50.0},
        robust={"rule": "median"},
    )
    result = federate_local(recipe, large_v0, tmp_path)
    assert sum(m["malicious"] for m in result.client_metrics.values()) == 1
    assert result.rounds[-1]["val.mean_acc"] >= result.rounds[0]["val.mean_acc"], result.rounds


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"algorithm": "fedmkt", "attack": {"kind": "sign_flip", "fraction": 0.2}},
            "poisons shared parameters",
        ),
        ({"attack": {"kind": "garbage_logits", "fraction": 0.2}}, "needs the logit exchange"),
        ({"robust": {"rule": "krum", "num_malicious": 1}}, "needs at least 5 clients"),
        ({"rounds": 0}, "rounds"),
        ({"algorithm": "fedmkt", "share": {"mode": "lora"}}, "share applies to fedavg"),
        ({"privacy": {"secagg": {"enabled": True}}, "robust": {"rule": "median"}}, "SecAgg"),
    ],
)
def test_a_recipe_with_bad_values_fails_with_a_clear_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        validate(FederatedRecipe, {"data": {"domains": ["comp", "rec"]}, **settings})


def test_run_config_must_name_recipe_work_dir_and_model():
    with pytest.raises(ConfigError, match=r"lacks \['work-dir', 'large-model'\]"):
        parse_run_config({"recipe": FederatedRecipe().model_dump_json()})


def test_unknown_domain_is_refused(toy_files, large_v0, tmp_path):
    recipe = make_recipe(toy_files)
    recipe = recipe.model_copy(
        update={"data": recipe.data.model_copy(update={"domains": ["tech", "sports"]})}
    )
    with pytest.raises(ConfigError, match="unknown"):
        federate_local(recipe, large_v0, tmp_path)


def test_fedavg_under_flowers_simulation_runtime(toy_files, large_v0, tmp_path):
    with one_thread():
        result = federate(make_recipe(toy_files, rounds=1, save_clients=False), large_v0, tmp_path)
    assert [r["round"] for r in result.rounds] == [0, 1]
    assert sorted(result.client_metrics) == ["health-0", "tech-0"]
    assert gain(result) > 0, result.rounds


@pytest.mark.parametrize("side", ["server", "client"])
def test_differential_privacy_reports_the_epsilon_spent(toy_files, large_v0, tmp_path, side):
    recipe = make_recipe(
        toy_files, rounds=1, privacy={"dp": {"enabled": True, "side": side, "noise_multiplier": 0.5}}
    )
    result = federate_local(recipe, large_v0, tmp_path)
    assert result.privacy["side"] == side and result.privacy["rounds"] == 1
    assert 0 < result.privacy["epsilon"] < float("inf")
    assert changed(large_v0, result.large)


def test_secure_aggregation_runs_fedavg_over_masked_updates(toy_files, large_v0, tmp_path):
    recipe = make_recipe(
        toy_files,
        partition={"clients_per_domain": 2},
        privacy={"secagg": {"enabled": True, "num_shares": 3, "reconstruction_threshold": 2}},
    )
    result = federate_local(recipe, large_v0, tmp_path)
    assert [r["round"] for r in result.rounds] == [0, 2]
    assert gain(result) >= 0.1, result.rounds
