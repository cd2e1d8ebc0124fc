"""A server learning rate and momentum on top of any aggregation rule (FedAvgM; FedOpt with SGD).

FedAvg moves the global model by the mean of the clients' updates. When each client holds a different
domain, the shared encoder's update is that mean, so every client's progress is diluted by the number
of clients, while one centralised epoch over the pooled data takes every step. A server step
``w <- w + lr * v`` with ``v <- momentum * v + (aggregate - w)`` (Hsu et al. 2019, "Measuring the Effects
of Non-Identical Data Distribution", FedAvgM; Reddi et al. 2021, "Adaptive Federated Optimization")
counters this. :class:`ServerOptimizer` applies it to whatever the wrapped (robust) strategy
aggregated, so it composes with the robust rules, which Flower's own ``FedAvgM`` does not. The
per-domain heads re-aggregated over their owners (:class:`~fanbu.federated.heads.OwnedHeads`) are
not diluted and keep their aggregate. ``lr=1, momentum=0`` is the plain aggregate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from pydantic import Field

from fanbu.config import Strict
from fanbu.federated.heads import StrategyWrapper

log = logging.getLogger(__name__)


class ServerOptConfig(Strict):
    """FedAvg / FedProx: the server's step on the aggregated update."""

    lr: float = Field(1.0, gt=0, le=10, description="Server learning rate on the aggregated update (1: none).")
    momentum: float = Field(0.0, ge=0, lt=1, description="Server momentum across rounds (0: none).")

    @property
    def plain(self) -> bool:
        """Whether this is the plain aggregate (nothing to wrap)."""
        return self.lr == 1.0 and self.momentum == 0.0


class ServerOptimizer(StrategyWrapper):
    """Wraps a strategy: the new global model is a server SGD step along its aggregate.

    Args:
        inner: The strategy that aggregates the replies (robust rule, head ownership, ...).
        config: Server learning rate and momentum.
        skip_prefixes: Arrays (by name prefix) that keep the inner aggregate as it is.
        last_round: Rounds after this one keep the inner aggregate (the head round: no momentum may move
            the encoder the heads are being fitted to); None: every round.
    """

    def __init__(
        self,
        inner: Strategy,
        config: ServerOptConfig,
        skip_prefixes: tuple[str, ...] = (),
        last_round: int | None = None,
    ) -> None:
        super().__init__(inner)
        self.config = config
        self.skip = skip_prefixes
        self.last_round = last_round
        self._current: dict[str, np.ndarray] | None = None
        self._velocity: dict[str, np.ndarray] = {}

    def summary(self) -> None:
        """Log the settings, then the inner strategy's summary."""
        log.info("ServerOptimizer: lr %s, momentum %s", self.config.lr, self.config.momentum)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model sent this round, then delegate."""
        self._current = {k: a.numpy().copy() for k, a in arrays.items()}
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner aggregate turned into a server step from this round's global model."""
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None or self._current is None:
            return arrays, metrics
        if self.last_round is not None and server_round > self.last_round:
            return arrays, metrics
        merged = {k: a.numpy() for k, a in arrays.items()}
        out = {}
        for key, value in merged.items():
            current = self._current.get(key)
            if current is None or key.startswith(self.skip) or current.shape != value.shape:
                out[key] = value
                continue
            delta = value.astype(np.float32) - current.astype(np.float32)
            velocity = self.config.momentum * self._velocity.get(key, 0.0) + delta
            self._velocity[key] = velocity
            out[key] = (current + self.config.lr * velocity).astype(value.dtype)
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.items()}), metrics

