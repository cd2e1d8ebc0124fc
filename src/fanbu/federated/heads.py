"""Per-domain heads under FedAvg: each head is aggregated over the clients that train it.

Every client sends the whole shared model (Flower's strategies need the same arrays from everyone),
but trains only its own domain's head. Averaging a head over all clients would shrink its update by
the share of clients that own it; :class:`OwnedHeads` wraps the robust strategy and, after it has
aggregated everything, replaces each domain head by the aggregate over that domain's clients alone,
with the same rule (:func:`~fanbu.federated.robust.aggregate_logits` on the flattened heads), tolerating
as many attackers as that smaller group allows. The encoder keeps the strategy's aggregate.

It is switched off (``own_heads=False``) under differential privacy, whose noise is calibrated to the
mean over all clients; SecAgg+ never shows the server a single client's head. Either way the wrapper
hands every round's replies to ``on_replies`` (the server's record of its clients) and refuses a
round in which every client failed, instead of silently keeping the old weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fanbu.errors import ConfigError
from fanbu.federated.robust import aggregate_logits, check_clients

log = logging.getLogger(__name__)


def head_keys(keys: Iterable[str], head: str) -> list[str]:
    """The array names of one head (``heads.<name>.weight`` / ``.bias``)."""
    return [k for k in keys if k.startswith(f"heads.{head}.")]


def group_tolerance(rule: str, n: int, f: int, beta: float | None) -> tuple[str, int]:
    """The rule and the largest ``f' <= f`` that ``n`` clients support (plain mean if none)."""
    for tolerate in range(f, -1, -1):
        try:
            check_clients(rule, n, tolerate, beta)
            return rule, tolerate
        except ConfigError:
            continue
    return "fedavg", 0


class StrategyWrapper(Strategy):
    """A strategy that wraps another: every step delegated unless a subclass overrides it."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def summary(self) -> None:
        """Delegated."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegated."""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegated."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegated."""
        return self.inner.aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegated."""
        return self.inner.aggregate_evaluate(server_round, replies)


class OwnedHeads(StrategyWrapper):
    """Wraps a strategy; each ``heads.<domain>.*`` array is aggregated over that domain's clients.

    Args:
        inner: The (robust) strategy that aggregates everything first.
        heads: The domain heads clients train.
        rule: The robust rule, applied to each head's group too.
        tolerate: Attackers the rule tolerates over all clients.
        trim_beta: The trimmed mean's trim fraction.
        own_heads: Re-aggregate the heads per domain (off: only watch the replies).
        on_replies: Called with each round's replies before aggregation.
    """

    def __init__(
        self,
        inner: Strategy,
        heads: Sequence[str],
        rule: str,
        tolerate: int,
        trim_beta: float | None = None,
        own_heads: bool = True,
        on_replies: Callable[[list[Message]], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.heads = list(heads) if own_heads else []
        self.rule = rule
        self.tolerate = tolerate
        self.trim_beta = trim_beta
        self.on_replies = on_replies

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        log.info("OwnedHeads: heads %s aggregated over their own clients (%s)", self.heads, self.rule)
        self.inner.summary()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner aggregate, with each domain head re-aggregated over its own clients."""
        replies = in_client_order(replies)
        failed = [m for m in replies if m.has_error()]
        if replies and len(failed) == len(replies):
            raise ConfigError(
                f"round {server_round}: every client failed; the first said: {failed[0].error.reason}"
            )
        if self.on_replies is not None:
            self.on_replies(replies)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        merged = {k: a.numpy() for k, a in arrays.items()}
        for head in self.heads:
            keys = head_keys(merged, head)
            owners = [m for m in replies if _owner(m) == head and _finite(m, keys)]
            if not keys or not owners:
                continue
            flat = np.stack([np.concatenate([_array(m, k).ravel() for k in keys]) for m in owners])  # (k, d)
            weights = np.array(
                [float(next(iter(m.content.metric_records.values()))["num-examples"]) for m in owners]
            )
            rule, f = group_tolerance(self.rule, len(owners), self.tolerate, self.trim_beta)
            vector = aggregate_logits(flat[:, None, :], rule, f, weights)[0]  # (d,)
            offset = 0
            for key in keys:
                size = merged[key].size
                merged[key] = (
                    vector[offset : offset + size].reshape(merged[key].shape).astype(merged[key].dtype)
                )
                offset += size
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in merged.items()}), metrics


def in_client_order(replies: Iterable[Message]) -> list[Message]:
    """``replies`` sorted by client id (errors last): the order they are aggregated in.

    Replies arrive in whatever order the clients finish, and float sums depend on their order, so
    aggregating them as they come made two runs of one recipe differ in the last bits of every weight
    (and then more, as later rounds train from those weights).
    """

    def key(msg: Message) -> tuple[bool, str, int]:
        client = None if msg.has_error() or "client" not in msg.content else str(msg.content["client"]["id"])
        return client is None, client or "", msg.metadata.src_node_id

    return sorted(replies, key=key)


def _owner(msg: Message) -> str | None:
    if msg.has_error() or "client" not in msg.content:
        return None
    return str(msg.content["client"]["domain"])


def _array(msg: Message, key: str) -> np.ndarray:
    record = next(iter(msg.content.array_records.values()))
    return record[key].numpy()


def _finite(msg: Message, keys: Sequence[str]) -> bool:
    record = next(iter(msg.content.array_records.values()))
    return all(k in record and np.isfinite(record[k].numpy()).all() for k in keys)
