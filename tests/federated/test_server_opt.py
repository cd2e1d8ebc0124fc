"""The server step on top of an aggregation rule: learning rate, momentum, arrays it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import federate_local, make_recipe
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian
from flwr.supercore.task_identity import TaskIdentity
from pydantic import ValidationError

from fanbu.federated.recipe import FederatedRecipe
from fanbu.federated.server_opt import ServerOptConfig, ServerOptimizer


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 0)


def reply(arrays: dict[str, np.ndarray], weight: int = 10) -> Message:
    ins = Message(RecordDict(), dst_node_id=1, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v.astype(np.float32)) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": weight}),
        }
    )
    return Message(content, reply_to=ins)


class NoGrid:
    """configure_train only needs node ids from the grid."""

    def get_node_ids(self) -> list[int]:
        return [1, 2]


def one_round(strategy: ServerOptimizer, current: dict[str, np.ndarray], updates: list[dict[str, np.ndarray]], rnd: int):
    record = ArrayRecord({k: Array(v.astype(np.float32)) for k, v in current.items()})
    strategy.configure_train(rnd, record, ConfigRecord({}), NoGrid())
    arrays, _ = strategy.aggregate_train(rnd, [reply(u) for u in updates])
    return {k: a.numpy() for k, a in arrays.items()}


def test_server_lr_scales_the_mean_update_and_skips_heads():
    inner = FedAvg(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2, fraction_evaluate=0.0)
    strategy = ServerOptimizer(inner, ServerOptConfig(lr=3.0), skip_prefixes=("heads.",))
    current = {"encoder.w": np.zeros(4), "heads.a.weight": np.zeros(2)}
    updates = [
        {"encoder.w": np.array([1.0, 0, 0, 0]), "heads.a.weight": np.array([1.0, 1.0])},
        {"encoder.w": np.array([0, 1.0, 0, 0]), "heads.a.weight": np.array([3.0, 3.0])},
    ]
    out = one_round(strategy, current, updates, 1)
    np.testing.assert_allclose(out["encoder.w"], [1.5, 1.5, 0, 0])  # 3 x the mean update [0.5, 0.5, 0, 0]
    np.testing.assert_allclose(out["heads.a.weight"], [2.0, 2.0])  # the inner aggregate, unscaled
    assert out["encoder.w"].dtype == np.float32


def test_momentum_carries_the_previous_update_into_the_next_round():
    inner = FedMedian(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2, fraction_evaluate=0.0)
    strategy = ServerOptimizer(inner, ServerOptConfig(lr=1.0, momentum=0.5))
    first = one_round(strategy, {"w": np.zeros(2)}, [{"w": np.ones(2)}, {"w": np.ones(2)}], 1)
    np.testing.assert_allclose(first["w"], [1.0, 1.0])  # no history yet: the plain median step
    second = one_round(strategy, first, [{"w": first["w"] + 1}, {"w": first["w"] + 1}], 2)
    np.testing.assert_allclose(second["w"], [2.5, 2.5])  # 1 + (0.5 * 1 + 1)


def test_the_server_step_is_refused_where_it_cannot_apply():
    assert ServerOptConfig().plain and not ServerOptConfig(lr=2.0).plain
    FederatedRecipe.model_validate({"algorithm": "fedavg", "server": {"lr": 2.0, "momentum": 0.9}})
    with pytest.raises(ValidationError, match="server applies to fedavg / fedprox only"):
        FederatedRecipe.model_validate({"algorithm": "fedmkt", "server": {"lr": 2.0}})
    with pytest.raises(ValidationError, match="no server step"):
        FederatedRecipe.model_validate({"privacy": {"secagg": {"enabled": True}}, "server": {"momentum": 0.5}})
    with pytest.raises(ValidationError):
        ServerOptConfig(momentum=1.0)


def test_a_fedavg_run_with_server_momentum_moves_the_encoder_further(toy_files, large_v0, tmp_path):
    """Through the ServerApp: the same clients, a server lr of 2 moves the encoder about twice as far."""

    def distance(result) -> float:
        old, new = large_v0.model.encoder.state_dict(), result.large.model.encoder.state_dict()
        return float(sum(torch.sum((new[k].float() - old[k].float()) ** 2) for k in old) ** 0.5)

    plain = federate_local(make_recipe(toy_files, rounds=1), large_v0, tmp_path / "plain")
    faster = federate_local(make_recipe(toy_files, rounds=1, server={"lr": 2.0}), large_v0, tmp_path / "lr2")
    assert distance(faster) == pytest.approx(2 * distance(plain), rel=0.05)
    heads_plain, heads_faster = plain.large.model.heads.state_dict(), faster.large.model.heads.state_dict()
    assert all(torch.allclose(heads_plain[k], heads_faster[k]) for k in heads_plain)  # heads: not scaled


def test_no_server_step_after_the_last_round():
    inner = FedAvg(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2, fraction_evaluate=0.0)
    strategy = ServerOptimizer(inner, ServerOptConfig(lr=2.0, momentum=0.9), last_round=1)
    first = one_round(strategy, {"w": np.zeros(2)}, [{"w": np.ones(2)}, {"w": np.ones(2)}], 1)
    np.testing.assert_allclose(first["w"], [2.0, 2.0])
    head_round = one_round(strategy, first, [{"w": first["w"]}, {"w": first["w"]}], 2)
    np.testing.assert_allclose(head_round["w"], first["w"])  # momentum does not move it on


def test_the_head_round_fits_heads_to_the_final_encoder(toy_files, large_v0, tmp_path):
    """With head_round, the encoder is the plain run's; only the heads train once more."""

    plain = federate_local(make_recipe(toy_files, rounds=1), large_v0, tmp_path / "plain")
    head = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "restore_best": False, "progress": False}
    headed = federate_local(make_recipe(toy_files, rounds=1, head_round=head), large_v0, tmp_path / "head")
    assert [r["round"] for r in headed.rounds] == [0, 1, 2]
    old, new = plain.large.model.encoder.state_dict(), headed.large.model.encoder.state_dict()
    assert all(torch.allclose(old[k], new[k]) for k in old)
    heads_plain, heads_new = plain.large.model.heads.state_dict(), headed.large.model.heads.state_dict()
    assert any(not torch.allclose(heads_plain[k], heads_new[k]) for k in heads_plain)
    with pytest.raises(ValidationError, match="head_round applies to fedavg"):
        FederatedRecipe.model_validate({"algorithm": "fedmkt", "head_round": head})
