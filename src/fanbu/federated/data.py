"""What each side reads, under the benchmark protocol: clients their private shard, the server public data.

Both sides build the same :class:`~fanbu.data.domain.Benchmark` from the recipe's data section (the
built-in benchmark or the listed files, which each organisation holds locally): a client reads its
shard of its domain's private slice, the domain's public texts (the logit exchange) and the validation
part of its validation split; the server reads the public and validation slices of every domain, for
the promotion gate the gate splits, and for the report the test splits (never for a decision).
Nothing is sent over the network but models and logits. A process loads a benchmark once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from fanbu.data.domain import Benchmark
from fanbu.data.slices import Pairs, benchmark_of, domain_names, pairs
from fanbu.errors import ConfigError
from fanbu.federated.partition import ClientSlot, client_split, client_table
from fanbu.federated.recipe import FederatedData, FederatedRecipe
from fanbu.io import sha256_json

Labeled = Pairs


@lru_cache(maxsize=4)
def _benchmark(data_json: str) -> Benchmark:
    return benchmark_of(FederatedData.model_validate_json(data_json))


def benchmark(data: FederatedData) -> Benchmark:
    """The benchmark the data section describes (cached per process)."""
    return _benchmark(data.model_dump_json())


def domains_of(data: FederatedData) -> list[str]:
    """The federated domains: ``data.domains``, or every feedback domain of the benchmark."""
    return domain_names(data, benchmark(data))


def publicpairs(data: FederatedData, domain: str) -> Labeled:
    """The domain's public texts and labels, capped: the texts both sides exchange logits on."""
    return pairs(benchmark(data).public(domain), data.max_public, data.seed)


def texts_fingerprint(texts: list[str]) -> str:
    """sha256 of a list of texts: both sides check that they hold the same public texts."""
    return sha256_json(texts)


@dataclass
class ClientData:
    """One client's view: its private shard, its domain's public texts and validation split."""

    slot: ClientSlot
    label_names: list[str]
    train: Labeled
    public: Labeled
    validation: Labeled


def client_data(recipe: FederatedRecipe, slot: ClientSlot) -> ClientData:
    """The data of client ``slot`` (its domain's private slice cut by ``recipe.partition``)."""
    data = recipe.data
    bench = benchmark(data)
    private = bench.private(slot.domain)
    if data.max_private is not None:
        private = private.subsample(data.max_private, data.seed)
    shard = client_split(private, slot, recipe.partition)
    return ClientData(
        slot,
        list(bench.domain(slot.domain).label_names),
        (list(shard.texts), list(shard.labels or ())),
        publicpairs(data, slot.domain),
        pairs(bench.validation(slot.domain), data.max_validation, data.seed),
    )


@dataclass
class ServerData:
    """The server's view: every domain's public and validation slices, the gate splits the promotion
    decides on, and the test splits the report is scored on."""

    domains: list[str]
    public: dict[str, Labeled]
    validation: dict[str, Labeled]
    tests: dict[str, Labeled] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    gate: dict[str, Labeled] = field(default_factory=dict)

    def split_fingerprints(self, split: str) -> dict[str, str]:
        """Task -> the fingerprint of its ``split`` (``gate``, ``test``, ``validation``, ``public``)."""
        suffix = f"/{split}"
        return {k.removesuffix(suffix): v for k, v in self.fingerprints.items() if k.endswith(suffix)}


def server_data(recipe: FederatedRecipe, heads: list[str] | None = None) -> ServerData:
    """Public and validation slices of the federated domains; gate splits (for the promotion gate) and
    test splits (for the report) of ``heads``.

    Raises:
        ConfigError: a domain's labels differ from the large model's head of that name.
    """
    data, bench = recipe.data, benchmark(recipe.data)
    domains = domains_of(data)
    out = ServerData(domains, {}, {})
    for name in domains:
        out.public[name] = publicpairs(data, name)
        out.validation[name] = pairs(bench.validation(name), data.max_validation, data.seed)
        out.fingerprints[f"{name}/public"] = bench.public(name).fingerprint
        out.fingerprints[f"{name}/validation"] = bench.validation(name).fingerprint
    known = set(bench.names())
    for name in heads or []:
        if name in known:
            checked = bench.gate(name)
            if data.max_gate is not None:
                checked = checked.subsample(data.max_gate, data.seed)
            out.gate[name] = pairs(checked, None, data.seed)
            out.fingerprints[f"{name}/gate"] = checked.fingerprint
            test = bench.domain(name).test
            out.tests[name] = pairs(test, data.max_test, 0)
            out.fingerprints[f"{name}/test"] = test.fingerprint
    return out


def check_labels(recipe: FederatedRecipe, labels: dict[str, list[str]], what: str) -> None:
    """Every federated domain must have a head in ``labels`` with the data's label names, in order."""
    bench = benchmark(recipe.data)
    for name in domains_of(recipe.data):
        expected = list(bench.domain(name).label_names)
        if name not in labels:
            raise ConfigError(
                f"{what} has no head {name!r} (heads: {sorted(labels)}); add it before federating"
            )
        if list(labels[name]) != expected:
            raise ConfigError(
                f"{what}'s head {name!r} has labels {labels[name]}, the data {expected}; use the benchmark "
                "the model was trained on"
            )


def slots_of(recipe: FederatedRecipe) -> list[ClientSlot]:
    """Every client of the run, in partition-id order."""
    return client_table(domains_of(recipe.data), recipe.partition.clients_per_domain)
