"""Robust aggregation: Flower's Byzantine-robust strategies, update-norm clipping, robust logit averaging.

Each rule is registered in :data:`RULES` (a :class:`fanbu.registration.Catalog`) next to its code, with
a summary, its paper, its own settings and its capabilities (``byzantine_robust``, ``sum_only``). Model
updates are aggregated by Flower's own strategies (``FedAvg``, ``FedTrimmedAvg``, ``FedMedian``,
``Krum``, ``MultiKrum``, ``Bulyan``); :func:`make_strategy` only adds what they lack (see
:class:`GuardedStrategy`). Client logits in the FedMKT exchange are aggregated by
:func:`aggregate_logits`, which applies the same rules to ``(clients, samples, classes)`` stacks.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from pydantic import BaseModel, Field, field_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.federated.attacks import num_malicious
from fanbu.registration import Catalog, Entry, NoSettings

__all__ = [
    "RULES",
    "AggregationRule",
    "GuardedStrategy",
    "RobustConfig",
    "aggregate_logits",
    "check_clients",
    "clip_arrays",
    "krum_select",
    "make_strategy",
    "min_clients",
    "rule_of",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the rules


class AggregationRule:
    """One aggregation rule, as registered in :data:`RULES` (the class itself; never instantiated).

    Attributes:
        flower: Flower's strategy class that aggregates model updates with this rule.
    """

    flower: ClassVar[type[FedAvg]] = FedAvg

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        """The fewest clients with which the rule tolerates ``f`` malicious ones."""
        raise NotImplementedError

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        """Aggregate ``x`` ``(clients, ...)`` with client weights ``w`` ``(clients,)`` into shape ``x[0]``."""
        raise NotImplementedError

    @staticmethod
    def flower_kwargs(config: RobustConfig, f: int, select: int) -> dict[str, object]:
        """The rule's own arguments of its Flower class (``f`` tolerated, ``select`` kept by MultiKrum)."""
        return {}


RULES: Catalog[Entry] = Catalog(
    "rule",
    field="robust.rule",
    capabilities={
        "byzantine_robust": "tolerates f malicious clients when there are enough clients (see min_clients)",
        "sum_only": "needs only the weighted sum of the updates, so it runs under SecAgg+",
    },
)


class TrimmedMeanSettings(Strict):
    """The trimmed mean's own setting (``robust.trim_beta``)."""

    trim_beta: float = Field(0.2, ge=0.0, lt=0.5, description="trimmed_mean: fraction cut from each tail.")


class MultiKrumSettings(Strict):
    """MultiKrum's own setting (``robust.multikrum_select``)."""

    multikrum_select: int | None = Field(
        None, ge=1, description="multikrum: updates averaged after selection; default n - f."
    )


@RULES.register(
    "fedavg",
    summary="Weighted mean of the client updates (not robust: the baseline the robust rules are measured "
    "on).",
    reference="https://arxiv.org/abs/1602.05629",
    config=NoSettings,
    capabilities={"sum_only"},
)
class _FedAvg(AggregationRule):
    flower = FedAvg

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        return 1  # tolerates nobody, and is never refused

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        return np.tensordot(w / w.sum(), x, axes=1)


@RULES.register(
    "trimmed_mean",
    summary="Coordinate-wise trimmed mean: drop the largest and smallest values of each coordinate, "
    "average the rest.",
    reference="https://arxiv.org/abs/1803.01498",
    config=TrimmedMeanSettings,
    capabilities={"byzantine_robust"},
)
class _TrimmedMean(AggregationRule):
    flower = FedTrimmedAvg

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        if trim_beta is None or f == 0:  # trims f per side
            return 2 * f + 1
        if trim_beta <= 0:
            raise ConfigError(
                f"robust: trimmed_mean with trim_beta=0 trims nobody and cannot tolerate {f} malicious "
                "client(s); set robust.trim_beta above 0 (e.g. 0.2)"
            )
        n = max(1, math.floor(f / trim_beta) - 1)
        while int(trim_beta * n) < f:  # Flower trims int(beta * n) per tail
            n += 1
        return n

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        n = x.shape[0]
        return np.sort(x, axis=0)[f : n - f].mean(axis=0)

    @staticmethod
    def flower_kwargs(config: RobustConfig, f: int, select: int) -> dict[str, object]:
        return {"beta": config.trim_beta}


@RULES.register(
    "median",
    summary="Coordinate-wise median of the client updates.",
    reference="https://arxiv.org/abs/1803.01498",
    config=NoSettings,
    capabilities={"byzantine_robust"},
)
class _Median(AggregationRule):
    flower = FedMedian

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        return 2 * f + 1

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        return np.median(x, axis=0)


@RULES.register(
    "krum",
    summary="Krum: the one update closest (summed squared distance) to its n - f - 2 nearest others.",
    reference="https://proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html",
    config=NoSettings,
    capabilities={"byzantine_robust"},
)
class _Krum(AggregationRule):
    flower = Krum

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        return 2 * f + 3

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        return _krum_mean(x, w, f)  # the n - f best-scored, as MultiKrum (Flower's Krum keeps one)

    @staticmethod
    def flower_kwargs(config: RobustConfig, f: int, select: int) -> dict[str, object]:
        return {"num_malicious_nodes": f}


@RULES.register(
    "multikrum",
    summary="MultiKrum: the mean of the m updates with the best Krum scores (m = n - f by default).",
    reference="https://proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html",
    config=MultiKrumSettings,
    capabilities={"byzantine_robust"},
)
class _MultiKrum(AggregationRule):
    flower = MultiKrum

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        return 2 * f + 3

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        return _krum_mean(x, w, f)

    @staticmethod
    def flower_kwargs(config: RobustConfig, f: int, select: int) -> dict[str, object]:
        return {"num_malicious_nodes": f, "num_nodes_to_select": select}


@RULES.register(
    "bulyan",
    summary="Bulyan: Krum-select n - 2f updates, then a trimmed mean around their coordinate-wise median.",
    reference="https://arxiv.org/abs/1802.07927",
    config=NoSettings,
    capabilities={"byzantine_robust"},
)
class _Bulyan(AggregationRule):
    flower = Bulyan

    @staticmethod
    def minimum(f: int, trim_beta: float | None) -> int:
        return 4 * f + 3

    @staticmethod
    def aggregate(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        n = x.shape[0]
        theta = n - 2 * f
        chosen = krum_select(x.reshape(n, -1), f, theta)
        median = np.median(x[chosen], axis=0)
        return aggregate_n_closest_weights([median], [[x[i]] for i in chosen], theta - 2 * f)[0]

    @staticmethod
    def flower_kwargs(config: RobustConfig, f: int, select: int) -> dict[str, object]:
        return {"num_malicious_nodes": f}


def _krum_mean(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
    n = x.shape[0]
    chosen = krum_select(x.reshape(n, -1), f, n - f)
    return np.tensordot(w[chosen] / w[chosen].sum(), x[chosen], axes=1)


def rule_of(name: str) -> type[AggregationRule]:
    """The implementation of the rule ``name``, or a ConfigError naming the known rules."""
    try:
        return RULES.get(name).impl  # type: ignore[no-any-return]
    except ConfigError as exc:
        raise ConfigError(f"robust: {exc}") from None


# --------------------------------------------------------------------------- settings


class RobustConfig(Strict):
    """How the server aggregates client updates, and how many attackers it must tolerate."""

    rule: str = Field(
        "fedavg",
        description="Aggregation rule (fedavg is not robust; the others are): one of the registered RULES.",
        json_schema_extra=lambda schema: schema.update(enum=RULES.names()),
    )
    num_malicious: int | None = Field(
        None, ge=0, description="Attackers f the rule must tolerate; default: the attack fraction's count."
    )
    trim_beta: float = TrimmedMeanSettings.model_fields["trim_beta"]
    clip_norm: float | None = Field(
        None, gt=0, description="Clip each client's update to this L2 norm before aggregation (None: off)."
    )
    multikrum_select: int | None = MultiKrumSettings.model_fields["multikrum_select"]

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES.names())}")
        return rule

    def tolerated(self, n_clients: int, attack_fraction: float = 0.0) -> int:
        """The ``f`` to tolerate: ``num_malicious`` if set, else the attackers at ``attack_fraction``."""
        if self.num_malicious is not None:
            return self.num_malicious
        return num_malicious(n_clients, attack_fraction)

    def rule_settings(self) -> BaseModel:
        """The settings of :attr:`rule` alone, in its registered config class."""
        config = RULES.get(self.rule).config
        return config.model_validate(self.model_dump(include=set(config.model_fields)))


def min_clients(rule: str, f: int, trim_beta: float | None = None) -> int:
    """The fewest clients with which ``rule`` tolerates ``f`` malicious ones.

    Krum / MultiKrum need ``2f + 3``, Bulyan ``4f + 3``, the median ``2f + 1``; the trimmed mean needs
    ``floor(trim_beta * n) >= f`` (or ``2f + 1`` when it trims ``f`` per side, ``trim_beta=None``).
    FedAvg tolerates nobody and is never refused: it is the baseline the robust rules are measured on.
    Each rule's :meth:`AggregationRule.minimum` says it.
    """
    if f < 0:
        raise ConfigError(f"robust: the number of malicious clients must be >= 0, got {f}")
    return rule_of(rule).minimum(f, trim_beta)


def check_clients(rule: str, n_clients: int, f: int, trim_beta: float | None = None) -> None:
    """Refuse ``rule`` when ``n_clients`` are too few to tolerate ``f`` malicious clients.

    Raises:
        ConfigError: naming the minimum number of clients and what to change.
    """
    need = min_clients(rule, f, trim_beta)
    if n_clients < need:
        beta = f" at trim_beta={trim_beta}" if rule == "trimmed_mean" and trim_beta is not None else ""
        raise ConfigError(
            f"robust: rule {rule!r} tolerating {f} malicious client(s){beta} needs at least {need} "
            f"clients, got {n_clients}; add clients, lower robust.num_malicious (or attack.fraction), or "
            "choose a rule with a lower minimum (median 2f+1, krum/multikrum 2f+3, bulyan 4f+3)"
        )


def make_strategy(
    config: RobustConfig,
    n_clients: int,
    *,
    attack_fraction: float = 0.0,
    proximal_mu: float = 0.0,
    **flower_kwargs: object,
) -> Strategy:
    """The Flower strategy for ``config.rule``, refusing too few clients.

    Args:
        config: The robust settings.
        n_clients: Clients sampled (and aggregated) each round; it is also the default of Flower's
            ``min_train_nodes`` and ``min_available_nodes``, so a round waits for all of them.
        attack_fraction: Used for ``f`` when ``config.num_malicious`` is unset.
        proximal_mu: FedProx's proximal weight, sent to clients as ``proximal-mu`` (0: off).
        **flower_kwargs: Passed to the Flower class (``fraction_train``, ``weighted_by_key``, ...).

    Returns:
        Plain ``FedAvg`` / ``FedProx`` for an unclipped fedavg; otherwise the Flower class for the rule
        with :class:`GuardedStrategy` mixed in (clipping, non-finite screening, per-round minimum).
    """
    if n_clients < 1:
        raise ConfigError(f"robust: need at least one client, got {n_clients}")
    f = config.tolerated(n_clients, attack_fraction)
    beta = config.trim_beta if config.rule == "trimmed_mean" else None
    check_clients(config.rule, n_clients, f, beta)
    select = config.multikrum_select or n_clients - f
    if config.rule == "multikrum" and select > n_clients - f:
        raise ConfigError(
            f"robust: multikrum_select={select} exceeds n - f = {n_clients - f}; "
            "lower robust.multikrum_select"
        )
    kwargs: dict[str, object] = {
        "min_train_nodes": n_clients,
        "min_available_nodes": n_clients,
        "min_evaluate_nodes": min(2, n_clients),
    }
    kwargs.update(flower_kwargs)
    impl = rule_of(config.rule)
    kwargs.update(impl.flower_kwargs(config, f, select))
    if config.rule == "fedavg" and config.clip_norm is None:
        return FedProx(proximal_mu=proximal_mu, **kwargs) if proximal_mu > 0 else FedAvg(**kwargs)
    guarded = type(f"Guarded{impl.flower.__name__}", (GuardedStrategy, impl.flower), {})
    strategy = guarded(**kwargs)
    strategy.set_guard(
        rule=config.rule, tolerate=f, clip_norm=config.clip_norm, proximal_mu=proximal_mu, select=select
    )
    return strategy


def aggregate_logits(stack: np.ndarray, rule: str, f: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Aggregate client logits ``(clients, samples, classes)`` into ``(samples, classes)``.

    ``fedavg`` is the weighted mean; ``median`` the coordinate-wise median; ``trimmed_mean`` drops the
    ``f`` largest and ``f`` smallest values of each coordinate; ``krum`` / ``multikrum`` average the
    ``n - f`` clients with the best Krum scores (closest to the others); ``bulyan`` applies Bulyan.
    Clients whose logits are not finite are dropped first and counted among the ``f`` attackers.
    """
    x = np.asarray(stack, dtype=np.float64)  # (clients, samples, classes)
    if x.ndim != 3 or x.shape[0] == 0:
        raise ConfigError(f"aggregate_logits: expected (clients, samples, classes), got shape {x.shape}")
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)  # (clients,)
    if w.shape != (x.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"aggregate_logits: need {x.shape[0]} non-negative weights with a positive sum")
    finite = np.isfinite(x).all(axis=(1, 2))  # (clients,)
    if not finite.all():
        log.warning("aggregate_logits: dropped %d client(s) with non-finite logits", int((~finite).sum()))
        f = max(0, f - int((~finite).sum()))
        x, w = x[finite], w[finite]
    check_clients(rule, x.shape[0], f)
    given = np.asarray(stack).dtype
    dtype = given if np.issubdtype(given, np.floating) else np.float32
    return np.asarray(rule_of(rule).aggregate(x, w, f), dtype=dtype)


def krum_select(flat: np.ndarray, f: int, m: int) -> np.ndarray:
    """Indices of the ``m`` rows of ``flat`` ``(n, d)`` with the lowest Krum scores.

    A row's score is the sum of its squared distances to its ``n - f - 2`` nearest other rows.
    """
    sq = (flat**2).sum(axis=1)  # (n,)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)  # (n, n)
    np.fill_diagonal(dist, np.inf)
    k = max(1, flat.shape[0] - f - 2)
    scores = np.sort(dist, axis=1)[:, :k].sum(axis=1)  # (n,)
    return np.argsort(scores, kind="stable")[:m]


def clip_arrays(
    global_arrays: Sequence[np.ndarray], local_arrays: Sequence[np.ndarray], max_norm: float
) -> list[np.ndarray]:
    """``local`` with its update ``local - global`` scaled down to L2 norm ``max_norm`` if longer.

    The norm is taken over all floating-point arrays together; integer arrays pass unchanged.
    """
    if max_norm <= 0:
        raise ConfigError(f"clip_arrays: max_norm must be > 0, got {max_norm}")
    if len(global_arrays) != len(local_arrays):
        raise ConfigError(f"clip_arrays: {len(global_arrays)} global arrays but {len(local_arrays)} local")
    floats = [np.issubdtype(np.asarray(w).dtype, np.floating) for w in local_arrays]
    deltas = [
        np.asarray(w, dtype=np.float64) - np.asarray(g, dtype=np.float64)
        for g, w, fl in zip(global_arrays, local_arrays, floats, strict=True)
        if fl
    ]
    norm = math.sqrt(sum(float((d**2).sum()) for d in deltas))
    factor = 1.0 if norm <= max_norm else max_norm / norm
    out, i = [], 0
    for g, w, fl in zip(global_arrays, local_arrays, floats, strict=True):
        if not fl:
            out.append(np.array(w, copy=True))
            continue
        out.append((np.asarray(g, dtype=np.float64) + factor * deltas[i]).astype(np.asarray(w).dtype))
        i += 1
    return out


class GuardedStrategy:
    """Mixed in before a Flower strategy class: what Flower's robust strategies lack.

    * clipping of each client's update to ``clip_norm`` before aggregation;
    * screening: a reply with non-finite arrays, or arrays that do not match the global ones, is
      dropped and counted among the ``f`` attackers (so Krum / Bulyan tolerate one fewer);
    * a per-round minimum: a round with fewer replies than the rule needs is skipped with a warning
      (as Flower's Bulyan does) instead of aggregating with a broken guarantee;
    * FedProx's ``proximal-mu`` in the train config, for any rule.
    """

    rule: str = "fedavg"
    tolerate: int = 0
    clip_norm: float | None = None
    proximal_mu: float = 0.0
    select: int = 1
    _global: dict[str, np.ndarray] | None = None

    def set_guard(
        self, *, rule: str, tolerate: int, clip_norm: float | None, proximal_mu: float, select: int
    ) -> None:
        """Set the guard's settings (Flower's ``__init__`` takes only its own)."""
        self.rule, self.tolerate, self.clip_norm = rule, tolerate, clip_norm
        self.proximal_mu, self.select = proximal_mu, select

    def summary(self) -> None:
        """Log the guard's settings, then the Flower strategy's."""
        log.info(
            "robust %s: tolerates %d malicious client(s), clip_norm=%s, proximal_mu=%s",
            self.rule,
            self.tolerate,
            self.clip_norm,
            self.proximal_mu,
        )
        super().summary()  # type: ignore[misc]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays (for clipping), inject ``proximal-mu``, then configure."""
        self._global = {k: a.numpy() for k, a in arrays.items()}
        if self.proximal_mu > 0:
            config["proximal-mu"] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen and clip the replies, check there are enough, then aggregate with the Flower rule."""
        kept, dropped = self._screen(list(replies))
        f = max(0, self.tolerate - dropped)
        n = sum(not m.has_error() for m in kept)
        need = min_clients(self.rule, f, getattr(self, "beta", None) if self.rule == "trimmed_mean" else None)
        if n < need:
            log.warning(
                "round %d: %s needs %d valid replies to tolerate %d attacker(s), got %d; round skipped",
                server_round,
                self.rule,
                need,
                f,
                n,
            )
            return None, None
        if hasattr(self, "num_malicious_nodes"):
            self.num_malicious_nodes = f
        if self.rule == "multikrum":
            self.num_nodes_to_select = min(self.select, n - f)
        # Flower's Bulyan forces gc.collect() once per reply (ArrayRecord.to_numpy_ndarrays), which
        # costs ~0.4 s each in a process holding torch; frozen objects are skipped by the collector.
        gc.freeze()
        try:
            return super().aggregate_train(server_round, kept)  # type: ignore[misc]
        finally:
            gc.unfreeze()

    def _screen(self, replies: list[Message]) -> tuple[list[Message], int]:
        kept, dropped = [], 0
        for msg in replies:
            if msg.has_error() or len(msg.content.array_records) != 1:
                kept.append(msg)  # Flower logs errors and rejects malformed replies itself
                continue
            name, record = next(iter(msg.content.array_records.items()))
            local = {k: a.numpy() for k, a in record.items()}
            reason = _defect(local, self._global)
            if reason:
                log.warning("dropped the reply of node %d: %s", msg.metadata.src_node_id, reason)
                dropped += 1
                continue
            if self.clip_norm is not None and self._global is not None:
                keys = list(local)
                clipped = clip_arrays([self._global[k] for k in keys], list(local.values()), self.clip_norm)
                msg.content[name] = ArrayRecord({k: Array(v) for k, v in zip(keys, clipped, strict=True)})
            kept.append(msg)
        return kept, dropped


def _defect(local: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None) -> str:
    """Why a reply's arrays cannot be aggregated ('' when they can)."""
    for key, arr in local.items():
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return f"non-finite values in {key!r}"
    if reference is not None:
        if list(local) != list(reference):
            return "its array names differ from the global model's"
        for key, arr in local.items():
            if arr.shape != reference[key].shape:
                return f"{key!r} has shape {arr.shape}, the global model {reference[key].shape}"
    return ""
