"""Robust aggregation: Flower's robust strategies through make_strategy, clipping, robust logit averaging.

Replies are hand-built Flower Messages; ``LoopbackGrid`` delivers messages to in-process ClientApps so
that a whole ``Strategy.start`` loop runs in a second, without a simulation engine.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, Krum
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fanbu.errors import ConfigError
from fanbu.federated.attacks import attack_arrays, attack_logits
from fanbu.federated.robust import RobustConfig, aggregate_logits, check_clients, clip_arrays, make_strategy

N, F, D = 15, 3, 64  # clients, attackers (20%), parameters
ROBUST = ["trimmed_mean", "median", "krum", "multikrum", "bulyan"]
ATTACKS = ["sign_flip", "scaled_replacement", "garbage"]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower stamps instruction messages with the process's run/node ids; set them as a ServerApp would."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 0)


def reply(arrays: dict[str, np.ndarray], weight: int = 10, node: int = 1) -> Message:
    """A client's train reply carrying ``arrays`` and its ``num-examples`` weight."""
    ins = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": weight}),
        }
    )
    return Message(content, reply_to=ins)


class LoopbackGrid(Grid):
    """Delivers each message to an in-process ClientApp, copying it as a network would."""

    def __init__(self, apps: dict[int, ClientApp]) -> None:
        self.apps = apps
        self.contexts = {n: Context(n, n, {}, RecordDict(), {}) for n in apps}
        self._run = Run.create_empty(1)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        return list(self.apps)

    def push_messages(self, messages):
        raise NotImplementedError("LoopbackGrid answers synchronously: use send_and_receive")

    def pull_messages(self, message_ids):
        raise NotImplementedError("LoopbackGrid answers synchronously: use send_and_receive")

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        out = []
        for msg in messages:
            copied = Message(content=copy.deepcopy(msg.content), metadata=copy.deepcopy(msg.metadata))
            node = msg.metadata.dst_node_id
            out.append(self.apps[node](copied, self.contexts[node]))
        return out


def scenario(attack: str, seed: int = 0) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """N client updates around a common direction, F of them attacked; returns them and the honest mean."""
    rng = np.random.default_rng(seed)
    g = np.zeros(D, dtype=np.float32)
    u = rng.normal(size=D).astype(np.float32)
    honest = [(u + 0.05 * rng.normal(size=D)).astype(np.float32) for _ in range(N - F)]
    if attack == "sign_flip":
        bad = [attack_arrays("sign_flip", [g], [h], 1.0)[0] for h in honest[:F]]
    elif attack == "scaled_replacement":
        target = rng.normal(size=D).astype(np.float32)
        bad = [attack_arrays("scaled_replacement", [g], [target], float(N))[0] for _ in range(F)]
    else:
        bad = [rng.normal(0, 100, size=D).astype(np.float32) for _ in range(F)]
    updates = honest + bad
    order = rng.permutation(N)
    return [{"w": updates[i]} for i in order], np.mean(honest, axis=0)


def aggregate(strategy, updates: list[dict[str, np.ndarray]]) -> np.ndarray:
    arrays, _ = strategy.aggregate_train(1, [reply(u, node=i + 1) for i, u in enumerate(updates)])
    return arrays["w"].numpy()


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("rule", ROBUST)
def test_robust_rules_recover_the_honest_mean_under_20_percent_attackers(rule, attack):
    updates, honest = scenario(attack)
    strategy = make_strategy(RobustConfig(rule=rule), N, attack_fraction=0.2)
    assert rel_error(aggregate(strategy, updates), honest) < 0.15


@pytest.mark.parametrize("attack", ATTACKS)
def test_plain_fedavg_is_pulled_away_by_the_same_attackers(attack):
    updates, honest = scenario(attack)
    strategy = make_strategy(RobustConfig(rule="fedavg"), N, attack_fraction=0.2)
    assert type(strategy) is FedAvg
    assert rel_error(aggregate(strategy, updates), honest) > 0.3


def test_make_strategy_builds_the_flower_class_with_f_from_the_attack_fraction():
    krum = make_strategy(RobustConfig(rule="krum"), 10, attack_fraction=0.2)
    assert isinstance(krum, Krum) and krum.num_malicious_nodes == 2
    assert krum.min_train_nodes == krum.min_available_nodes == 10
    assert make_strategy(RobustConfig(rule="krum", num_malicious=3), 10).num_malicious_nodes == 3
    assert make_strategy(RobustConfig(rule="multikrum"), 10, attack_fraction=0.2).num_nodes_to_select == 8
    assert make_strategy(RobustConfig(rule="trimmed_mean", trim_beta=0.3), 10).beta == 0.3
    assert isinstance(make_strategy(RobustConfig(rule="median"), 5), FedMedian)
    prox = make_strategy(RobustConfig(), 4, proximal_mu=0.1, fraction_evaluate=0.0)
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.1 and prox.fraction_evaluate == 0.0
    with pytest.raises(ConfigError, match="multikrum_select"):
        make_strategy(RobustConfig(rule="multikrum", multikrum_select=9), 10, attack_fraction=0.2)


@pytest.mark.parametrize(
    ("rule", "f", "too_few", "minimum"),
    [
        ("krum", 2, 6, 7),
        ("multikrum", 1, 4, 5),
        ("bulyan", 2, 10, 11),
        ("median", 3, 6, 7),
        ("trimmed_mean", 3, 14, 15),
    ],
)
def test_too_few_clients_are_refused_with_the_minimum_in_the_message(rule, f, too_few, minimum):
    with pytest.raises(ConfigError, match=f"needs at least {minimum} clients, got {too_few}"):
        check_clients(rule, too_few, f, 0.2 if rule == "trimmed_mean" else None)
    check_clients(rule, minimum, f, 0.2 if rule == "trimmed_mean" else None)
    with pytest.raises(ConfigError, match=f"at least {minimum}"):
        make_strategy(RobustConfig(rule=rule, num_malicious=f), too_few)


def test_fedavg_is_never_refused_and_trimmed_mean_without_trimming_tolerates_nobody():
    check_clients("fedavg", 2, 1)
    with pytest.raises(ConfigError, match="trim_beta"):
        check_clients("trimmed_mean", 10, 1, 0.0)
    with pytest.raises(ConfigError, match="unknown rule"):
        check_clients("geomedian", 10, 1)


def test_clip_arrays_bounds_the_update_norm_and_keeps_small_updates():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=7).astype(np.float32), np.arange(3)]
    big = [g[0] + 10, g[1] - 10, np.arange(3) * 2]
    clipped = clip_arrays(g, big, 2.0)
    norm = np.sqrt(
        sum(((c.astype(np.float64) - x) ** 2).sum() for c, x in zip(clipped[:2], g[:2], strict=True))
    )
    assert norm == pytest.approx(2.0, rel=1e-5)
    np.testing.assert_array_equal(clipped[2], big[2])  # integer arrays pass unchanged
    small = [g[0] + 0.01, g[1], g[2]]
    np.testing.assert_allclose(clip_arrays(g, small, 2.0)[0], small[0], rtol=1e-6)
    assert clipped[0].dtype == np.float32


def test_guarded_strategy_clips_each_update_before_aggregating():
    grid = LoopbackGrid({i: ClientApp() for i in range(1, 6)})
    strategy = make_strategy(RobustConfig(rule="fedavg", clip_norm=1.0), 5)
    g = np.zeros(D, dtype=np.float32)
    strategy.configure_train(1, ArrayRecord({"w": Array(g)}), ConfigRecord({}), grid)
    updates, _ = scenario("scaled_replacement")
    out = aggregate(strategy, updates[:5])
    assert np.linalg.norm(out - g) <= 1.0 + 1e-5
    unclipped = aggregate(make_strategy(RobustConfig(rule="fedavg"), 5), updates[:5])
    assert np.linalg.norm(unclipped - g) > 5.0


def test_non_finite_and_mismatched_replies_are_dropped_and_counted_as_attackers(caplog):
    rng = np.random.default_rng(1)
    honest = [{"w": (1.0 + 0.01 * rng.normal(size=8)).astype(np.float32)} for _ in range(5)]
    nan = {"w": np.full(8, np.nan, dtype=np.float32)}
    strategy = make_strategy(RobustConfig(rule="krum", num_malicious=2), 7)
    grid = LoopbackGrid({i: ClientApp() for i in range(1, 8)})
    strategy.configure_train(
        1, ArrayRecord({"w": Array(np.zeros(8, dtype=np.float32))}), ConfigRecord({}), grid
    )
    renamed = {"v": np.zeros(8, dtype=np.float32)}
    out = aggregate(strategy, [*honest, nan, renamed])
    assert np.isfinite(out).all() and np.allclose(out, 1.0, atol=0.05)
    assert "non-finite" in caplog.text and "array names differ" in caplog.text
    assert strategy.num_malicious_nodes == 0  # both known-bad replies were removed from the f to tolerate


def test_a_round_with_too_few_valid_replies_is_skipped(caplog):
    strategy = make_strategy(RobustConfig(rule="bulyan", num_malicious=1), 7)
    updates, _ = scenario("sign_flip")
    arrays, metrics = strategy.aggregate_train(1, [reply(u) for u in updates[:6]])
    assert arrays is None and metrics is None
    assert "needs 7 valid replies" in caplog.text


def test_proximal_mu_reaches_the_clients_for_any_rule():
    grid = LoopbackGrid({i: ClientApp() for i in range(1, 6)})
    strategy = make_strategy(RobustConfig(rule="median"), 5, proximal_mu=0.05)
    messages = strategy.configure_train(1, ArrayRecord({"w": Array(np.zeros(3))}), ConfigRecord({}), grid)
    assert {m.content["config"]["proximal-mu"] for m in messages} == {0.05}


def logit_stack(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N clients' logits (samples=40, classes=6), F of them garbage; returns the stack and the honest mean."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 3, size=(40, 6))  # (samples, classes)
    honest = [base + 0.3 * rng.normal(size=base.shape) for _ in range(N - F)]
    bad = [attack_logits(base, rng, 100.0) for _ in range(F)]
    stack = np.stack(honest + bad)[rng.permutation(N)].astype(np.float32)  # (clients, samples, classes)
    return stack, np.mean(honest, axis=0)


@pytest.mark.parametrize("rule", ROBUST)
def test_robust_logit_aggregation_ignores_garbage_logits(rule):
    stack, honest = logit_stack()
    out = aggregate_logits(stack, rule, F)
    assert out.shape == honest.shape and out.dtype == np.float32
    assert rel_error(out, honest) < 0.15


def test_plain_mean_of_logits_is_ruined_by_garbage_and_weights_are_respected():
    stack, honest = logit_stack()
    assert rel_error(aggregate_logits(stack, "fedavg", F), honest) > 1.0
    two = np.stack([np.zeros((2, 3)), np.ones((2, 3))])
    np.testing.assert_allclose(aggregate_logits(two, "fedavg", 0, weights=np.array([1.0, 3.0])), 0.75)


def test_logit_aggregation_drops_non_finite_clients_and_refuses_too_few():
    stack, _ = logit_stack()
    stack[0] = np.nan
    assert np.isfinite(aggregate_logits(stack, "median", F)).all()
    with pytest.raises(ConfigError, match="needs at least 5 clients, got 4"):
        aggregate_logits(stack[1:5], "krum", 1)
    with pytest.raises(ConfigError, match="clients, samples, classes"):
        aggregate_logits(stack[0], "median", 0)


def test_a_whole_strategy_loop_with_attacking_clients_converges_only_with_a_robust_rule():
    target = np.linspace(-1, 1, 10).astype(np.float32)
    bad = {2, 5}

    def client(node: int) -> ClientApp:
        app = ClientApp()

        @app.train()
        def train(msg: Message, context: Context) -> Message:
            g = msg.content["arrays"]["w"].numpy()
            local = g + 0.5 * (target - g)  # one step towards the shared optimum
            if node in bad:
                local = attack_arrays("sign_flip", [g], [local], 4.0)[0]
            arrays = ArrayRecord({"w": Array(local)})
            return Message(
                RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 5})}), reply_to=msg
            )

        return app

    grid = LoopbackGrid({n: client(n) for n in range(1, 11)})
    start = ArrayRecord({"w": Array(np.zeros(10, dtype=np.float32))})
    final = {}
    for rule in ("fedavg", "median"):
        strategy = make_strategy(
            RobustConfig(rule=rule, clip_norm=5.0), 10, attack_fraction=0.2, fraction_evaluate=0.0
        )
        result = strategy.start(grid, start, num_rounds=6)
        final[rule] = result.arrays["w"].numpy()
    assert np.abs(final["median"] - target).max() < 0.05
    assert np.abs(final["fedavg"] - target).max() > 0.5
