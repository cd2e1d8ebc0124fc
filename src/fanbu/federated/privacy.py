"""Privacy: differential privacy through Flower's DP wrappers and mods, and SecAgg+ as an option.

Each privacy mode is registered in :data:`PRIVACY_MODES` (a :class:`fanbu.registration.Catalog`) next to
its code: ``dp_server``, ``dp_client`` (central DP on model arrays, by ``dp.side``), ``dp_logits`` (DP on
FedMKT's logits) and ``secagg``. A recipe turns them on with ``privacy.dp`` and ``privacy.secagg``;
:func:`active_modes` says which are on.

Central DP (https://arxiv.org/abs/1710.06963): each client's update is clipped to ``clipping_norm``
(on the server, or on the client with Flower's ``fixedclipping_mod``) and the aggregate gets Gaussian
noise of standard deviation ``noise_multiplier * clipping_norm / clients``. The epsilon spent is
computed by Google's ``dp-accounting`` RDP accountant (:func:`epsilon_spent`). The guarantee holds
for the uniform mean of client updates: with a robust rule or unequal client weights the noise is
added just the same, but the reported epsilon is no longer a proven bound.

SecAgg+ (Bell et al. 2020, https://eprint.iacr.org/2020/704): in flwr 1.42 the protocol exists only as a legacy
workflow, ``flwr.server.workflow.SecAggPlusWorkflow``, which needs a ``LegacyContext``, a legacy
``flwr.server.strategy`` strategy (``configure_fit`` / ``aggregate_fit``) and clients that answer in
the legacy ``fitins`` / ``fitres`` layout. It cannot wrap the message-based strategies of
``flwr.serverapp.strategy``: their ``aggregate_train`` needs each client's ArrayRecord, which SecAgg+
hides by design (the server only learns the masked sum). For the same reason no robust rule (median,
Krum, Bulyan, trimmed mean), server-side clipping or logit exchange can run under SecAgg+: only the
(weighted) mean of model arrays, optionally with client-side DP. :func:`run_secagg` runs that legacy
path from a Message-API ``ServerApp``; :func:`client_mods` gives the client mods it needs, including
:func:`legacy_train_mod`, which lets a Message-API ``@app.train()`` function answer it unchanged.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Literal

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import ErrorCode
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.federated.robust import RULES
from fanbu.registration import Catalog, Entry

PRIVACY_MODES: Catalog[Entry] = Catalog(
    "privacy mode",
    field="privacy",
    capabilities={
        "differential_privacy": "adds Gaussian noise calibrated to a clipping bound; the run reports epsilon",
        "arrays": "applies to the exchange of model arrays (FedAvg / FedProx)",
        "logits": "applies to FedMKT's exchange of logits on the public data",
        "client_mods": "needs Flower client mods on every client (see client_mods)",
        "hides_updates": "the server sees only the masked sum of the updates: no robust rule, no server step",
    },
)


DPSide = Literal["server", "client"]  # each side s is the privacy mode ``dp_{s}`` of PRIVACY_MODES


class DPConfig(Strict):
    """Central differential privacy: clip each client's update, add Gaussian noise to the aggregate."""

    enabled: bool = Field(False, description="Turn differential privacy on.")
    side: DPSide = Field(
        "server", description="Where updates are clipped: on the server, or by the clients' mod."
    )
    noise_multiplier: float = Field(1.0, gt=0, description="Noise std divided by the clipping norm.")
    clipping_norm: float = Field(1.0, gt=0, description="L2 bound of one client's update.")
    delta: float = Field(1e-5, gt=0, lt=1, description="The delta at which epsilon is reported.")
    logit_clip: float = Field(
        10.0, gt=0, description="Logit exchange: L2 bound of each sample's logit vector before noise."
    )


class SecAggConfig(Strict):
    """SecAgg+ secure aggregation: the server learns only the sum of the clients' masked vectors."""

    enabled: bool = Field(False, description="Aggregate model arrays with SecAgg+ (FedAvg only).")
    num_shares: int | float = Field(
        1.0, gt=0, description="Shares of each client's key: a count (> 2), or a fraction of the clients."
    )
    reconstruction_threshold: int | float = Field(
        0.5, gt=0, description="Shares needed to reconstruct a key: a count, or a fraction of the shares."
    )
    clipping_range: float = Field(
        8.0, gt=0, description="Model values are clipped to [-range, range] before quantization."
    )
    quantization_range: int = Field(2**22, gt=0, description="Integer levels of the quantization.")
    max_weight: float = Field(
        1000.0, gt=0, description="Upper bound of a client's num-examples (larger weights overflow)."
    )
    timeout: float | None = Field(None, gt=0, description="Seconds to wait for replies at each stage.")

    @model_validator(mode="after")
    def _check_shares(self) -> SecAggConfig:
        if isinstance(self.num_shares, int) and self.num_shares != 1 and self.num_shares <= 2:
            raise ValueError("num_shares as a count must be > 2 (or a fraction such as 1.0)")
        if isinstance(self.reconstruction_threshold, float) and self.reconstruction_threshold > 1:
            raise ValueError("reconstruction_threshold as a fraction must be <= 1")
        shares, threshold = self.num_shares, self.reconstruction_threshold
        if isinstance(shares, int) and isinstance(threshold, int) and threshold != 1 and threshold >= shares:
            raise ValueError("reconstruction_threshold must be below num_shares")
        return self


class PrivacyConfig(Strict):
    """Differential privacy and secure aggregation settings of a federated run."""

    dp: DPConfig = Field(default_factory=DPConfig)
    secagg: SecAggConfig = Field(default_factory=SecAggConfig)

    @model_validator(mode="after")
    def _check_combination(self) -> PrivacyConfig:
        if self.secagg.enabled and self.dp.enabled and self.dp.side == "server":
            raise ValueError(
                "dp.side=server clips each client's update on the server, which SecAgg+ hides; "
                "set dp.side: client"
            )
        return self


def check_compatible(config: PrivacyConfig, rule: str, exchange: str = "arrays") -> None:
    """Refuse privacy settings the aggregation cannot honour.

    Args:
        config: The privacy settings.
        rule: The robust rule (``fedavg``, ``median``, ...).
        exchange: ``arrays`` (FedAvg / FedProx on shared parameters) or ``logits`` (FedMKT).

    Raises:
        ConfigError: SecAgg+ with a robust rule or with the logit exchange.
    """
    if not config.secagg.enabled:
        return
    if rule not in RULES or not RULES[rule].has("sum_only"):
        raise ConfigError(
            f"privacy.secagg: SecAgg+ reveals only the sum of the clients' updates, so robust rule "
            f"{rule!r} (which needs each update) cannot run under it; set robust.rule: fedavg or "
            "privacy.secagg.enabled: false"
        )
    if exchange != "arrays":
        raise ConfigError(
            "privacy.secagg: SecAgg+ in flwr 1.42 aggregates model arrays only (its legacy fit "
            "workflow), not the FedMKT logit exchange; turn it off, or use dp for the logits"
        )


def active_modes(config: PrivacyConfig, exchange: str = "arrays") -> list[str]:
    """The :data:`PRIVACY_MODES` that ``config`` turns on for ``exchange`` (``arrays`` or ``logits``)."""
    modes = []
    if config.dp.enabled:
        modes.append("dp_logits" if exchange == "logits" else f"dp_{config.dp.side}")
    if config.secagg.enabled:
        modes.append("secagg")
    return modes


@PRIVACY_MODES.register(
    "dp_server",
    summary="Central DP (DP-FedAvg), server-side fixed clipping: the server clips each update to "
    "clipping_norm and adds Gaussian noise to the aggregate.",
    reference="https://arxiv.org/abs/1710.06963",
    config=DPConfig,
    capabilities={"differential_privacy", "arrays"},
)
def server_side_dp(strategy: Strategy, dp: DPConfig, num_sampled_clients: int) -> Strategy:
    """``strategy`` in Flower's ``DifferentialPrivacyServerSideFixedClipping`` (clips each reply, adds noise)."""
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, dp.noise_multiplier, dp.clipping_norm, num_sampled_clients
    )


@PRIVACY_MODES.register(
    "dp_client",
    summary="Central DP (DP-FedAvg), client-side fixed clipping: each client's fixedclipping_mod clips its "
    "update to clipping_norm, the server adds Gaussian noise to the aggregate.",
    reference="https://flower.ai/docs/framework/how-to-use-differential-privacy.html",
    config=DPConfig,
    capabilities={"differential_privacy", "arrays", "client_mods"},
)
def client_side_dp(strategy: Strategy, dp: DPConfig, num_sampled_clients: int) -> Strategy:
    """``strategy`` in Flower's ``DifferentialPrivacyClientSideFixedClipping`` (sends the clipping norm to the
    clients, whose ``fixedclipping_mod`` clips, and adds the noise)."""
    return DifferentialPrivacyClientSideFixedClipping(
        strategy, dp.noise_multiplier, dp.clipping_norm, num_sampled_clients
    )


def wrap_strategy(strategy: Strategy, config: PrivacyConfig, num_sampled_clients: int) -> Strategy:
    """``strategy`` wrapped by the DP mode of ``config.dp.side`` (``dp_server``, ``dp_client``) when DP is on.

    Server side: ``DifferentialPrivacyServerSideFixedClipping`` clips each reply and adds the noise.
    Client side: ``DifferentialPrivacyClientSideFixedClipping`` sends ``clipping_norm`` to the clients,
    whose ``fixedclipping_mod`` (see :func:`client_mods`) clips, and adds the noise.
    """
    dp = config.dp
    if not dp.enabled:
        return strategy
    if num_sampled_clients < 1:
        raise ConfigError(f"privacy.dp: num_sampled_clients must be >= 1, got {num_sampled_clients}")
    wrap = PRIVACY_MODES.get(f"dp_{dp.side}").impl
    return wrap(strategy, dp, num_sampled_clients)  # type: ignore[no-any-return]


def client_mods(config: PrivacyConfig) -> list:
    """The Flower client mods the privacy settings need, outermost first.

    Client-side DP adds ``fixedclipping_mod``; SecAgg+ adds ``secaggplus_mod`` and fanbu's
    ``legacy_train_mod`` (which lets a Message-API ``@app.train()`` function answer the legacy
    ``fitins`` messages that SecAgg+ sends), before the clipping mod so that clipping sees the
    Message-API layout.
    """
    mods: list = []
    if config.secagg.enabled:
        from flwr.client.mod import secaggplus_mod

        mods += [secaggplus_mod, legacy_train_mod]
    if config.dp.enabled and config.dp.side == "client":
        mods.append(fixedclipping_mod)
    return mods


def epsilon_spent(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` Gaussian releases, by dp-accounting's RDP accountant.

    Args:
        noise_multiplier: Noise std over the clipping norm (``inf`` epsilon when 0).
        sampling_rate: Fraction of clients sampled each round (Poisson amplification below 1).
        rounds: Releases composed (federated rounds).
        delta: The delta of the (epsilon, delta) guarantee.
    """
    from dp_accounting import dp_event, rdp

    if noise_multiplier < 0 or not 0 < sampling_rate <= 1 or rounds < 0 or not 0 < delta < 1:
        raise ConfigError(
            "epsilon_spent: need noise_multiplier >= 0, 0 < sampling_rate <= 1, rounds >= 0, "
            f"0 < delta < 1; got {noise_multiplier}, {sampling_rate}, {rounds}, {delta}"
        )
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    event: dp_event.DpEvent = dp_event.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_event.PoissonSampledDpEvent(sampling_rate, event)
    absl = logging.getLogger("absl")  # it warns for each fractional order it has to skip
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        # Poisson-sampled RDP at fractional orders costs seconds per order; integer orders are exact,
        # fast, and still give a valid (slightly looser) epsilon.
        orders = None if sampling_rate == 1 else [*range(2, 65), 128, 256]
        accountant = rdp.RdpAccountant(orders)
        accountant.compose(event, rounds)
        return float(accountant.get_epsilon(delta))
    finally:
        absl.setLevel(level)


def dp_report(config: PrivacyConfig, sampling_rate: float, rounds: int) -> dict[str, float | str | int]:
    """What a run records about its privacy: the DP settings and the epsilon spent ({} when off)."""
    dp = config.dp
    if not dp.enabled:
        return {}
    return {
        "side": dp.side,
        "noise_multiplier": dp.noise_multiplier,
        "clipping_norm": dp.clipping_norm,
        "delta": dp.delta,
        "rounds": rounds,
        "sampling_rate": sampling_rate,
        "epsilon": epsilon_spent(dp.noise_multiplier, sampling_rate, rounds, dp.delta),
    }


@PRIVACY_MODES.register(
    "dp_logits",
    summary="Gaussian mechanism on a FedMKT client's logits: clip each sample's logit vector to logit_clip, "
    "add noise of std noise_multiplier * logit_clip.",
    reference="https://doi.org/10.1561/0400000042",
    config=DPConfig,
    capabilities={"differential_privacy", "logits"},
)
def noisy_logits(
    logits: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Clip each sample's logit vector to L2 norm ``clip``, then add N(0, (noise_multiplier * clip)^2).

    This is the Gaussian mechanism on a client's logits for the public data (one release per round).
    """
    if clip <= 0 or noise_multiplier < 0:
        raise ConfigError(
            f"noisy_logits: need clip > 0 and noise_multiplier >= 0, got {clip}, {noise_multiplier}"
        )
    x = np.asarray(logits, dtype=np.float64)  # (samples, classes)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)  # (samples, 1)
    x = x * np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    x = x + rng.normal(0.0, noise_multiplier * clip, size=x.shape)
    return x.astype(logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float32)


# --- SecAgg+ (legacy workflow) -------------------------------------------------------------------

ARRAY_KEYS = "fanbu.array-keys"  # train-config key carrying the global arrays' names (JSON list)
WEIGHT_KEY = "num-examples"  # the Message-API weight a client reports in its MetricRecord


def legacy_train_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Let a Message-API ``@app.train()`` function answer the legacy ``fitins`` messages of SecAgg+.

    The ``fitins`` arrays (named from ``fanbu.array-keys``) and config become the usual
    ``arrays`` / ``config`` records; the reply's arrays become the *update* ``local - global``
    (small, so SecAgg+'s quantization range fits it) and its ``num-examples`` the legacy weight.
    Other messages pass through untouched.
    """
    if msg.metadata.message_type != MessageType.TRAIN or "fitins.parameters" not in msg.content.array_records:
        return call_next(msg, ctxt)
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    global_arrays = parameters_to_ndarrays(fitins.parameters)
    keys = json.loads(str(config.pop(ARRAY_KEYS))) if ARRAY_KEYS in config else None
    keys = keys or [str(i) for i in range(len(global_arrays))]
    original = msg.content
    msg.content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(a) for k, a in zip(keys, global_arrays, strict=True)}),
            "config": ConfigRecord(config),
        }
    )
    try:
        reply = call_next(msg, ctxt)
    finally:
        msg.content = original
    if reply.has_error():
        return reply
    arrays = list(reply.content.array_records.values())
    metrics = list(reply.content.metric_records.values())
    malformed = len(arrays) != 1 or len(metrics) != 1 or WEIGHT_KEY not in metrics[0]
    if malformed or set(arrays[0]) != set(keys):
        reason = (
            f"a SecAgg+ train reply needs one ArrayRecord with keys {keys} "
            f"and one MetricRecord with {WEIGHT_KEY!r}"
        )
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
    update = [arrays[0][k].numpy() - g for k, g in zip(keys, global_arrays, strict=True)]
    scalars = {k: v for k, v in metrics[0].items() if isinstance(v, int | float)}
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), int(metrics[0][WEIGHT_KEY]), scalars)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


@PRIVACY_MODES.register(
    "secagg",
    summary="SecAgg+ secure aggregation (Flower's legacy workflow): the server learns only the weighted sum "
    "of the clients' masked updates.",
    reference="https://eprint.iacr.org/2020/704",
    config=SecAggConfig,
    capabilities={"arrays", "client_mods", "hides_updates"},
)
def run_secagg(
    grid: Grid,
    context: Context,
    arrays: ArrayRecord,
    *,
    num_rounds: int,
    num_clients: int,
    config: PrivacyConfig,
    train_config: dict[str, int | float | str | bool] | None = None,
) -> ArrayRecord:
    """FedAvg of the clients' updates under SecAgg+, from inside a Message-API ``ServerApp``.

    Runs Flower's legacy ``DefaultWorkflow`` with ``SecAggPlusWorkflow`` as its fit step on a
    ``LegacyContext`` built from ``context``; the clients must use :func:`client_mods`. With
    ``config.dp`` on (client side), the legacy ``DifferentialPrivacyClientSideFixedClipping``
    wrapper adds the noise. Returns the final arrays, with the names of ``arrays``.
    """
    from flwr.server import ServerConfig
    from flwr.server.compat import LegacyContext
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping as LegacyDP
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    if not config.secagg.enabled:
        raise ConfigError("run_secagg: privacy.secagg.enabled is false; use the message-based strategy")
    if num_rounds < 1 or num_clients < 2:
        raise ConfigError(
            f"run_secagg: need num_rounds >= 1 and num_clients >= 2, got {num_rounds}, {num_clients}"
        )
    keys = list(arrays.keys())
    start = [arrays[k].numpy() for k in keys]
    extra = dict(train_config or {})
    strategy = _UpdateFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=num_clients,
        min_available_clients=num_clients,
        initial_parameters=ndarrays_to_parameters(start),
        on_fit_config_fn=lambda rnd: {**extra, "server-round": rnd, ARRAY_KEYS: json.dumps(keys)},
    )
    if config.dp.enabled:
        strategy = LegacyDP(strategy, config.dp.noise_multiplier, config.dp.clipping_norm, num_clients)
    sa = config.secagg
    workflow = SecAggPlusWorkflow(
        sa.num_shares,
        sa.reconstruction_threshold,
        clipping_range=sa.clipping_range,
        quantization_range=sa.quantization_range,
        max_weight=sa.max_weight,
        timeout=sa.timeout,
    )
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=num_rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    final = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    return ArrayRecord({k: Array(v.astype(s.dtype)) for k, v, s in zip(keys, final, start, strict=True)})


class _UpdateFedAvg(LegacyFedAvg):
    """Legacy FedAvg over updates: the clients send ``local - global``; the global is added back."""

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        self._global = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple:
        params, metrics = super().aggregate_fit(server_round, results, failures)
        if params is None:
            return None, metrics
        mean_update = parameters_to_ndarrays(params)
        return ndarrays_to_parameters(
            [g + u for g, u in zip(self._global, mean_update, strict=True)]
        ), metrics
