"""Privacy: Flower's DP wrappers and mods, the epsilon accountant, noisy logits, SecAgg+ end to end."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting import PrivacyConfig as FlowerPrivacyConfig
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant
from test_robust import LoopbackGrid, reply, task_identity  # noqa: F401 - task_identity is an autouse fixture

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.federated.privacy import (
    PrivacyConfig,
    check_compatible,
    client_mods,
    dp_report,
    epsilon_spent,
    legacy_train_mod,
    noisy_logits,
    run_secagg,
    wrap_strategy,
)
from fanbu.federated.robust import RobustConfig, make_strategy


def dp(side: str = "server", noise: float = 0.5, clip: float = 2.0) -> PrivacyConfig:
    return validate(
        PrivacyConfig,
        {"dp": {"enabled": True, "side": side, "noise_multiplier": noise, "clipping_norm": clip}},
    )


def test_server_side_dp_clips_each_update_and_adds_noise_of_the_configured_scale():
    n, d = 4, 40_000
    strategy = wrap_strategy(make_strategy(RobustConfig(), n, fraction_evaluate=0.0), dp(), n)
    assert isinstance(strategy, DifferentialPrivacyServerSideFixedClipping)
    grid = LoopbackGrid({i: ClientApp() for i in range(1, n + 1)})
    g = np.zeros(d, dtype=np.float32)
    strategy.configure_train(1, ArrayRecord({"w": Array(g)}), ConfigRecord({}), grid)
    small = np.full(d, 1e-3, dtype=np.float32)  # update norm 0.2, under the clipping norm 2.0
    out, _ = strategy.aggregate_train(1, [reply({"w": small}, node=i) for i in range(1, n + 1)])
    noise = out["w"].numpy() - small
    assert abs(noise.mean()) < 0.01
    assert noise.std() == pytest.approx(0.5 * 2.0 / n, rel=0.05)  # noise_multiplier * clip / clients

    strategy.configure_train(2, ArrayRecord({"w": Array(g)}), ConfigRecord({}), grid)
    huge = np.full(d, 1.0, dtype=np.float32)  # norm 200: clipped to 2
    out, _ = strategy.aggregate_train(2, [reply({"w": huge}, node=i) for i in range(1, n + 1)])
    assert out["w"].numpy().mean() == pytest.approx(2.0 / np.sqrt(d), abs=0.005)


def test_client_side_dp_sends_the_clipping_norm_and_the_mod_clips_on_the_client():
    n = 3
    config = dp(side="client", clip=1.0)
    strategy = wrap_strategy(make_strategy(RobustConfig(), n, fraction_evaluate=0.0), config, n)
    assert isinstance(strategy, DifferentialPrivacyClientSideFixedClipping)
    assert client_mods(config) == [fixedclipping_mod]
    app = ClientApp(mods=client_mods(config))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        g = msg.content["arrays"]["w"].numpy()
        arrays = ArrayRecord({"w": Array(g + 10.0)})
        return Message(
            RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg
        )

    grid = LoopbackGrid({i: app for i in range(1, n + 1)})
    g = np.zeros(50, dtype=np.float32)
    messages = list(strategy.configure_train(1, ArrayRecord({"w": Array(g)}), ConfigRecord({}), grid))
    assert {m.content["config"]["clipping_norm"] for m in messages} == {1.0}
    replies = grid.send_and_receive(messages)
    assert all(
        np.linalg.norm(r.content["arrays"]["w"].numpy() - g) == pytest.approx(1.0, rel=1e-5) for r in replies
    )


def test_dp_off_leaves_the_strategy_alone_and_needs_no_mods():
    strategy = make_strategy(RobustConfig(), 3)
    assert wrap_strategy(strategy, PrivacyConfig(), 3) is strategy
    assert client_mods(PrivacyConfig()) == []
    assert dp_report(PrivacyConfig(), 1.0, 5) == {}


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    eps = [epsilon_spent(1.0, 1.0, rounds, 1e-5) for rounds in (1, 5, 20)]
    assert eps[0] < eps[1] < eps[2]
    noisier = [epsilon_spent(noise, 1.0, 10, 1e-5) for noise in (0.8, 1.5, 4.0)]
    assert noisier[0] > noisier[1] > noisier[2] > 0
    assert epsilon_spent(1.0, 0.1, 10, 1e-5) < epsilon_spent(1.0, 1.0, 10, 1e-5)  # sampling amplifies
    assert epsilon_spent(1.0, 1.0, 0, 1e-5) == 0.0
    with pytest.raises(ConfigError, match="sampling_rate"):
        epsilon_spent(1.0, 0.0, 10, 1e-5)


def test_epsilon_matches_flowers_own_rdp_accountant():
    config = FlowerPrivacyConfig(
        1e-5, 10, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION
    )
    flower = RdpAccountant(config)
    flower.compose(GaussianPrivacyEvent(noise_multiplier=1.2, sample_size=10, population_size=10), count=7)
    assert epsilon_spent(1.2, 1.0, 7, 1e-5) == pytest.approx(flower.get_epsilon(1e-5), rel=1e-9)


def test_dp_report_records_the_settings_and_the_epsilon():
    report = dp_report(dp(noise=1.1, clip=0.5), 1.0, 3)
    assert report["epsilon"] == pytest.approx(epsilon_spent(1.1, 1.0, 3, 1e-5))
    assert report["rounds"] == 3 and report["clipping_norm"] == 0.5 and report["side"] == "server"


def test_noisy_logits_clip_each_sample_and_add_noise_of_the_configured_scale():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 10, size=(20_000, 4)).astype(np.float32)  # (samples, classes)
    clipped = noisy_logits(logits, clip=2.0, noise_multiplier=0.0, rng=rng)
    assert np.linalg.norm(clipped, axis=1).max() <= 2.0 + 1e-5
    small = np.full((20_000, 4), 0.1, dtype=np.float32)  # norm 0.2: not clipped
    noisy = noisy_logits(small, clip=2.0, noise_multiplier=0.5, rng=rng)
    assert noisy.dtype == np.float32
    assert (noisy - small).std() == pytest.approx(0.5 * 2.0, rel=0.03)
    assert abs((noisy - small).mean()) < 0.02


def test_privacy_settings_that_cannot_work_together_are_refused():
    with pytest.raises(ConfigError, match="dp.side: client"):
        validate(PrivacyConfig, {"dp": {"enabled": True}, "secagg": {"enabled": True}})
    with pytest.raises(ConfigError, match="num_shares"):
        validate(PrivacyConfig, {"secagg": {"enabled": True, "num_shares": 2}})
    secagg = validate(PrivacyConfig, {"secagg": {"enabled": True}})
    with pytest.raises(ConfigError, match="robust rule 'median'"):
        check_compatible(secagg, "median")
    with pytest.raises(ConfigError, match="logit"):
        check_compatible(secagg, "fedavg", exchange="logits")
    check_compatible(secagg, "fedavg")
    check_compatible(PrivacyConfig(), "bulyan", exchange="logits")


class RecordingGrid(LoopbackGrid):
    """A LoopbackGrid that keeps every reply the server receives."""

    def __init__(self, apps: dict[int, ClientApp]) -> None:
        super().__init__(apps)
        self.seen: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = super().send_and_receive(messages, timeout=timeout)
        self.seen += replies
        return replies


def secagg_clients(config: PrivacyConfig, shifts: list[float], weights: list[int]) -> dict[int, ClientApp]:
    """Message-API ClientApps that add ``shift`` to every weight, behind the SecAgg+ mods."""
    apps = {}
    for node, (shift, weight) in enumerate(zip(shifts, weights, strict=True), start=1):
        app = ClientApp(mods=client_mods(config))

        @app.train()
        def train(msg: Message, context: Context, shift: float = shift, weight: int = weight) -> Message:
            assert set(msg.content["arrays"]) == {"encoder.w", "head.b"}  # names survive the legacy path
            out = ArrayRecord({k: Array(a.numpy() + shift) for k, a in msg.content["arrays"].items()})
            metrics = MetricRecord({"num-examples": weight, "loss": 0.5})
            return Message(RecordDict({"arrays": out, "metrics": metrics}), reply_to=msg)

        apps[node] = app
    return apps


def secagg_error_bound(config: PrivacyConfig, weights: list[int], rounds: int = 1) -> float:
    """The most SecAgg+'s quantization can move the weighted mean of the updates.

    Each client scales its update by ``weight / max_weight`` and rounds it stochastically to a grid of step
    ``2 * clipping_range / quantization_range``: less than one step off per value. The server divides the
    sum by ``sum(weights) / max_weight``, so the mean is off by less than ``clients * step * max_weight /
    sum(weights)`` per round.
    """
    sa = config.secagg
    step = 2 * sa.clipping_range / sa.quantization_range
    return rounds * len(weights) * step * sa.max_weight / sum(weights)


def start_arrays() -> ArrayRecord:
    return ArrayRecord(
        {
            "encoder.w": Array(np.full((3, 4), 20.0, dtype=np.float32)),
            "head.b": Array(np.zeros(5, dtype=np.float32)),
        }
    )


def test_secagg_plus_averages_the_updates_without_the_server_seeing_one():
    config = validate(PrivacyConfig, {"secagg": {"enabled": True}})
    shifts, weights = [0.1, 0.2, 0.3, -0.1], [10, 20, 30, 40]
    grid = RecordingGrid(secagg_clients(config, shifts, weights))
    server = Context(0, 0, {}, RecordDict(), {})
    out = run_secagg(grid, server, start_arrays(), num_rounds=2, num_clients=4, config=config)
    step = np.average(shifts, weights=weights)
    assert list(out.keys()) == ["encoder.w", "head.b"]
    bound = secagg_error_bound(config, weights, rounds=2)
    assert bound < 1e-3  # the settings are fine enough for the check to mean something
    np.testing.assert_allclose(
        out["encoder.w"].numpy(), 20.0 + 2 * step, rtol=0, atol=bound
    )  # 20 > clipping_range: fine
    np.testing.assert_allclose(out["head.b"].numpy(), 2 * step, rtol=0, atol=bound)
    assert out["encoder.w"].numpy().dtype == np.float32
    plain = [
        r
        for r in grid.seen
        if not r.has_error() and any(len(rec) for rec in r.content.array_records.values())
    ]
    assert grid.seen and plain == []  # every reply carried masked vectors only, never arrays


def test_secagg_plus_composes_with_client_side_dp_clipping():
    config = validate(
        PrivacyConfig,
        {
            "secagg": {"enabled": True},
            "dp": {"enabled": True, "side": "client", "noise_multiplier": 0.01, "clipping_norm": 1.0},
        },
    )
    assert len(client_mods(config)) == 3
    grid = LoopbackGrid(secagg_clients(config, [5.0, 5.0, 5.0], [1, 1, 1]))
    out = run_secagg(
        grid, Context(0, 0, {}, RecordDict(), {}), start_arrays(), num_rounds=1, num_clients=3, config=config
    )
    update = np.concatenate([(out["encoder.w"].numpy() - 20.0).ravel(), out["head.b"].numpy()])
    assert np.linalg.norm(update) == pytest.approx(1.0, abs=0.05)  # each update was clipped to norm 1


def test_legacy_train_mod_passes_message_api_traffic_through():
    sentinel = object()
    msg = reply({"w": np.zeros(2, dtype=np.float32)})
    assert legacy_train_mod(msg, Context(0, 0, {}, RecordDict(), {}), lambda m, c: sentinel) is sentinel


def test_run_secagg_refuses_when_secagg_is_off():
    with pytest.raises(ConfigError, match="secagg.enabled is false"):
        run_secagg(
            LoopbackGrid({}),
            Context(0, 0, {}, RecordDict(), {}),
            start_arrays(),
            num_rounds=1,
            num_clients=2,
            config=PrivacyConfig(),
        )
