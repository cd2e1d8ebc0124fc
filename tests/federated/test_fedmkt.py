"""FedMKT: the logit exchange improves both sides; selection and robust aggregation of client knowledge."""

from __future__ import annotations

import numpy as np
from conftest import federate_local, local_runner, make_recipe, quick

from fanbu.federated.fedmkt import aggregate_domain, select, softmax
from fanbu.federated.recipe import MKTConfig
from fanbu.federated.run import run_federated
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry


def mkt_recipe(toy_files, **settings):
    """FedMKT over two domains with two non-IID clients each; clients and server train a few epochs."""
    base = {
        "algorithm": "fedmkt",
        "partition": {"clients_per_domain": 2, "alpha": 0.5},
        "mkt": {"client_train": quick(2).model_dump(), "server_train": quick(3).model_dump()},
    }
    return make_recipe(toy_files, **{**base, **settings})


def test_selection_keeps_confident_knowledge_that_agrees_with_the_label():
    logits = np.log(np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.05, 0.9, 0.05]], dtype=np.float32))
    labels = [0, 0, 0]
    assert select(logits, labels, MKTConfig(selection="none")).weights.tolist() == [1.0, 1.0, 1.0]
    confident = select(logits, labels, MKTConfig(selection="confidence", threshold=0.5)).weights
    assert confident[0] > 0.89 and confident[1] == 0 and confident[2] > 0.89
    agreeing = select(logits, labels, MKTConfig(selection="agreement")).weights
    assert agreeing[0] > 0 and agreeing[1] > 0 and agreeing[2] == 0, (
        "text 2's knowledge contradicts its label"
    )
    probs = select(logits, labels, MKTConfig(temperature=2.0)).probs
    assert np.allclose(probs, softmax(logits, 2.0)) and np.allclose(probs.sum(axis=1), 1.0)


def test_median_of_client_logits_ignores_a_garbage_client(toy_files):
    rng = np.random.default_rng(0)
    honest = np.log(softmax(rng.normal(size=(20, 3)) * 3))  # (20, 3) what honest clients agree on
    garbage = rng.normal(0, 100, size=(20, 3))
    stack = np.stack([honest, honest + 0.01, garbage]).astype(np.float32)  # (clients, samples, classes)
    labels = honest.argmax(axis=1).tolist()
    weights = np.ones(3)
    robust = aggregate_domain(stack, weights, labels, mkt_recipe(toy_files, robust={"rule": "median"}))
    naive = aggregate_domain(stack, weights, labels, mkt_recipe(toy_files))
    target = softmax(honest, 2.0)
    assert np.abs(robust.probs - target).max() < 0.05
    assert np.abs(naive.probs - target).max() > 0.3, "the plain mean is dragged by the garbage"
    assert robust.weights.min() > 0, "every robust aggregate agrees with the labels"


def test_fedmkt_improves_the_server_and_the_clients(toy_files, large_v0, small_clients, tmp_path):
    result = federate_local(mkt_recipe(toy_files), large_v0, tmp_path, small_clients)
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert result.rounds[-1]["val.mean_acc"] - result.rounds[0]["val.mean_acc"] >= 0.1, result.rounds
    assert result.clients_mean("acc-after") > result.clients_mean("acc-before") + 0.05, result.client_metrics
    assert sorted(result.clients) == ["health-0", "health-1", "tech-0", "tech-1"]
    for client_id, handle in result.clients.items():
        assert handle.model.hidden_size == 16, "clients keep their own (narrower) models"
        assert list(handle.labels) == [client_id.split("-")[0]]
    assert {"tech.kept", "health.kept"} <= set(result.rounds[1]["knowledge"])


def test_registry_lineage_and_gate(toy_files, large_v0, small_clients, tmp_path):
    registry = Registry.open(tmp_path / "home")
    path = registry.model_dir("large", 0)
    large_v0.save(path, Provenance(name="large:v0"))
    champion = registry.register_model(name="large", version=0, path=path, kind="encoder", status="champion")
    students = {}
    for domain, handle in small_clients.items():
        student_path = registry.model_dir(f"{domain}.student", 0)
        handle.save(student_path, Provenance(name=f"{domain}.student:v0"))
        students[domain] = registry.register_model(
            name=f"{domain}.student",
            version=0,
            path=student_path,
            kind="encoder",
            parents=[champion.id],
            relation="distilled",
        )
    recipe = mkt_recipe(
        toy_files, rounds=1, clients={"source": "registry", "models": {d: r.id for d, r in students.items()}}
    )
    summary = run_federated(recipe, registry, runner=local_runner)
    candidate = registry.get_model(summary["candidate"])
    assert candidate.relation == "federated"
    assert set(candidate.parents) == {champion.id, *(r.id for r in students.values())}
    assert candidate.status in ("champion", "rejected") and candidate.reason
    assert summary["promoted"] == (candidate.status == "champion")
    if summary["promoted"]:
        assert registry.get_model(champion.id).status == "archived"
    gated = {e.domain for e in registry.evaluations(candidate.id)}
    assert gated == {"tech", "health", "mood"}, "the gate scores every domain and the held-out task"
    assert len(summary["clients"]) == 4
    for client_id, row in summary["clients"].items():
        record = registry.get_model(row["model"])
        assert record.name == f"{client_id}.federated"
        assert record.parents == (students[client_id.split("-")[0]].id, candidate.id)
    assert registry.get_run(summary["run"]).status == "succeeded"


def test_garbage_logits_from_one_client_are_outvoted_by_the_median(
    toy_files, large_v0, small_clients, tmp_path
):
    recipe = mkt_recipe(
        toy_files,
        rounds=1,
        save_clients=False,
        partition={"clients_per_domain": 3, "alpha": 1.0},
        attack={"kind": "garbage_logits", "fraction": 1 / 6},
        robust={"rule": "median"},
    )
    result = federate_local(recipe, large_v0, tmp_path, small_clients)
    (attacked,) = [m["domain"] for m in result.client_metrics.values() if m["malicious"]]
    first, last = result.rounds[0], result.rounds[-1]
    # (the plain mean lets the garbage through: on this task the attacked head then falls below v0)
    assert last[f"val.{attacked}.acc"] > first[f"val.{attacked}.acc"], result.rounds
    assert last["val.mean_acc"] - first["val.mean_acc"] >= 0.1, result.rounds
