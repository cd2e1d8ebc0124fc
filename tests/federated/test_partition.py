"""Clients and their shards: the client table, node configs, IID and Dirichlet splits."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.data.domain import Split
from fanbu.errors import ConfigError
from fanbu.federated.partition import (
    ClientSlot,
    client_split,
    client_table,
    dirichlet_shards,
    iid_shards,
    resolve_slot,
    shard_indices,
)
from fanbu.federated.recipe import PartitionConfig

LABELS = [i % 4 for i in range(200)]  # 4 balanced classes


def test_client_table_numbers_clients_domain_by_domain():
    table = client_table(["comp", "rec"], 2)
    assert [s.id for s in table] == ["comp-0", "comp-1", "rec-0", "rec-1"]


def test_resolve_slot_from_partition_id_or_domain_name():
    table = client_table(["comp", "rec"], 2)
    assert resolve_slot({"partition-id": 2, "num-partitions": 4}, table) == ClientSlot("rec", 0)
    assert resolve_slot({"domain": "comp", "shard": 1}, table) == ClientSlot("comp", 1)


@pytest.mark.parametrize(
    ("node_config", "message"),
    [
        ({}, "names no client"),
        ({"partition-id": 0, "num-partitions": 3}, "the run has 4 clients"),
        ({"partition-id": 4, "num-partitions": 4}, "0 <= partition-id"),
        ({"domain": "sci"}, "does not have"),
    ],
)
def test_resolve_slot_refuses_a_node_the_run_lacks(node_config, message):
    with pytest.raises(ConfigError, match=message):
        resolve_slot(node_config, client_table(["comp", "rec"], 2))


def _check_partition(shards: list[list[int]], n: int) -> None:
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n)), "shards must be disjoint and cover every example"


def test_iid_shards_keep_the_label_mix():
    shards = iid_shards(LABELS, 4, seed=0)
    _check_partition(shards, len(LABELS))
    for shard in shards:
        counts = np.bincount([LABELS[i] for i in shard], minlength=4)
        assert counts.min() >= 12 and counts.max() <= 13


def test_dirichlet_shards_skew_labels_and_are_reproducible():
    shards = dirichlet_shards(LABELS, 4, alpha=0.1, seed=3, min_size=5)
    _check_partition(shards, len(LABELS))
    assert shards == dirichlet_shards(LABELS, 4, alpha=0.1, seed=3, min_size=5)
    assert min(len(s) for s in shards) >= 5
    top_share = [np.bincount([LABELS[i] for i in s], minlength=4).max() / len(s) for s in shards]
    assert np.mean(top_share) > 0.5, "alpha=0.1 should leave each client dominated by few labels"


def test_dirichlet_refuses_impossible_minimum():
    with pytest.raises(ConfigError, match="cannot give 4 clients 60 each"):
        dirichlet_shards(LABELS, 4, alpha=0.5, seed=0, min_size=60)


def test_client_split_selects_the_clients_shard():
    split = Split(tuple(f"text {i}" for i in range(len(LABELS))), tuple(LABELS))
    config = PartitionConfig(clients_per_domain=3, alpha=0.5, seed=1)
    parts = [client_split(split, ClientSlot("comp", k), config) for k in range(3)]
    assert sum(len(p) for p in parts) == len(split)
    assert len({t for p in parts for t in p.texts}) == len(split)
    other_domain = shard_indices(LABELS, 3, config, "rec")
    assert other_domain != shard_indices(LABELS, 3, config, "comp"), "each domain gets its own draw"
