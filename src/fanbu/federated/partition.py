"""Which client holds what: one or more clients per domain, each with a shard of the private slice.

Clients are numbered domain by domain (``comp-0, comp-1, ..., rec-0, ...``); a SuperNode finds its
client from Flower's node config: ``partition-id`` (and ``num-partitions``, checked) in simulation or
``--node-config "partition-id=3 num-partitions=10"`` in a deployment, or ``domain`` (and ``shard``)
given by name. A domain's private slice is cut into shards IID (stratified) or by a Dirichlet draw of
each label's share per client (Hsu et al. 2019, https://arxiv.org/abs/1909.06335): the smaller
``alpha``, the more skewed each client's label mix. Every client computes the same split from the
seed, so no data ever travels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fanbu.data.domain import Split
from fanbu.errors import ConfigError
from fanbu.federated.recipe import PartitionConfig

MAX_DRAWS = 100  # Dirichlet redraws before giving up on the minimum shard size


@dataclass(frozen=True)
class ClientSlot:
    """One client: its domain and its shard of that domain's private slice."""

    domain: str
    shard: int

    @property
    def id(self) -> str:
        """The client's id, e.g. ``comp-0``."""
        return f"{self.domain}-{self.shard}"


def client_table(domains: Sequence[str], clients_per_domain: int) -> list[ClientSlot]:
    """Every client, in partition-id order: domain by domain, shard by shard."""
    if clients_per_domain < 1:
        raise ConfigError(f"partition.clients_per_domain must be >= 1, got {clients_per_domain}")
    return [ClientSlot(d, s) for d in domains for s in range(clients_per_domain)]


def resolve_slot(node_config: Mapping[str, object], table: Sequence[ClientSlot]) -> ClientSlot:
    """The client a SuperNode runs, from its node config.

    Raises:
        ConfigError: the node config names no client, or one the run does not have.
    """
    if "domain" in node_config:
        slot = ClientSlot(str(node_config["domain"]), int(str(node_config.get("shard", 0))))
        if slot not in table:
            known = ", ".join(s.id for s in table)
            raise ConfigError(f"node config names client {slot.id}, which this run does not have ({known})")
        return slot
    if "partition-id" not in node_config:
        raise ConfigError(
            "the SuperNode's node config names no client: start it with --node-config "
            f"'partition-id=N num-partitions={len(table)}' (or 'domain=NAME shard=K')"
        )
    pid = int(str(node_config["partition-id"]))
    total = int(str(node_config.get("num-partitions", len(table))))
    if total != len(table) or not 0 <= pid < len(table):
        raise ConfigError(
            f"node config partition-id={pid} num-partitions={total}, but the run has {len(table)} clients "
            f"({', '.join(s.id for s in table)}); give num-partitions={len(table)} and 0 <= partition-id < it"
        )
    return table[pid]


def iid_shards(labels: Sequence[int], n_shards: int, seed: int) -> list[list[int]]:
    """Shards of roughly equal size and the same label mix: each label's examples dealt in turn."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    shards: list[list[int]] = [[] for _ in range(n_shards)]
    offset = 0
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        for i, row in enumerate(rows):
            shards[(offset + i) % n_shards].append(int(row))
        offset += len(rows)
    return [sorted(s) for s in shards]


def dirichlet_shards(
    labels: Sequence[int], n_shards: int, alpha: float, seed: int, min_size: int
) -> list[list[int]]:
    """Shards whose label mix follows ``Dir(alpha)`` per label; redrawn until each has ``min_size``.

    Raises:
        ConfigError: no draw in ``MAX_DRAWS`` gives every shard ``min_size`` examples.
    """
    if len(labels) < n_shards * min_size:
        raise ConfigError(
            f"partition: {len(labels)} private examples cannot give {n_shards} clients {min_size} each; "
            "lower partition.clients_per_domain or partition.min_examples"
        )
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    for _ in range(MAX_DRAWS):
        shards: list[list[int]] = [[] for _ in range(n_shards)]
        for label in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == label))
            share = rng.dirichlet(np.full(n_shards, alpha))  # (n_shards,)
            cuts = (np.cumsum(share)[:-1] * len(rows)).astype(int)
            for shard, part in enumerate(np.split(rows, cuts)):
                shards[shard] += [int(r) for r in part]
        if min(len(s) for s in shards) >= min_size:
            return [sorted(s) for s in shards]
    raise ConfigError(
        f"partition: no Dirichlet draw (alpha={alpha}) gave each of {n_shards} clients {min_size} examples "
        f"in {MAX_DRAWS} tries; raise partition.alpha, or lower clients_per_domain or min_examples"
    )


def shard_indices(
    labels: Sequence[int], n_shards: int, config: PartitionConfig, domain: str
) -> list[list[int]]:
    """The row indices of every shard of one domain's private slice."""
    seed = int(np.random.default_rng([config.seed, *domain.encode()]).integers(2**31))
    if config.alpha is None:
        shards = iid_shards(labels, n_shards, seed)
        if min(len(s) for s in shards) < config.min_examples:
            raise ConfigError(
                f"partition: {domain} has {len(labels)} private examples, too few for {n_shards} clients of "
                f"{config.min_examples}; lower partition.clients_per_domain or partition.min_examples"
            )
        return shards
    return dirichlet_shards(labels, n_shards, config.alpha, seed, config.min_examples)


def client_split(private: Split, slot: ClientSlot, config: PartitionConfig) -> Split:
    """The client's own shard of its domain's private slice."""
    if private.labels is None:
        raise ConfigError(f"partition: {slot.domain}'s private slice has no labels to train on")
    shards = shard_indices(private.labels, config.clients_per_domain, config, slot.domain)
    return private.select(shards[slot.shard])
