"""What adapt learns from: a domain's collected examples by tier, and the model's own slices to replay.

Collected rows come from a dataset ``fanbu collect`` registered (fingerprint-checked on read); their
labels are mapped by name onto the model head's order. Replay re-reads the model's **private** training
slice and the domain's **validation** part from the data spec its recipe recorded (derive's ``data``
section, or an earlier adapt's ``replay_data``), or from the spec the adapt recipe gives; either way
both slices must hash to the fingerprints recorded with the model. The test split is never read.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanbu.collect.curated import TIERS
from fanbu.collect.dataset import collected_sources, read_collected
from fanbu.data.readers import read_table
from fanbu.data.slices import Pairs, benchmark_of, pairs
from fanbu.derive.data import DeriveData
from fanbu.errors import ConfigError, DomainError, RegistryError
from fanbu.registry import DatasetRecord, ModelRecord, Registry

SLICES = ("private", "validation")  # the recorded fingerprints adapt checks; never "test"


@dataclass(frozen=True)
class Collected:
    """One domain's collected examples: per tier, texts and label ids in the model head's order."""

    record: DatasetRecord
    tiers: dict[str, Pairs]


def read_examples(registry: Registry, dataset: str, domain: str, head_labels: Sequence[str]) -> Collected:
    """The labelled rows of ``domain`` in a collected dataset, split by tier.

    Raises:
        ConfigError: an unknown dataset, or label names that differ from the head's.
    """
    try:
        data = read_collected(registry, dataset)
    except RegistryError as exc:
        raise ConfigError(f"collected: {exc}") from None
    by_tier: dict[str, Pairs] = {tier: ([], []) for tier in TIERS}
    if domain not in data.labeled:
        return Collected(data.record, by_tier)
    names = data.label_names[domain]
    if set(names) != set(head_labels):
        raise ConfigError(
            f"collected: dataset {data.record.id} labels domain {domain!r} with {names}, but the model's "
            f"head has {list(head_labels)}; collect traffic answered by this model (or one with the same "
            "labels), or set domain to another head"
        )
    (source,) = [s for s in collected_sources(registry, data.record.id) if s.name == domain]
    rows = read_table(Path(source.train), fmt="jsonl", label_field="tier").records  # same rows, same order
    index = {name: i for i, name in enumerate(head_labels)}
    texts, labels = data.labeled[domain]
    for text, label, row in zip(texts, labels, rows, strict=True):
        if row.label not in by_tier:
            raise DomainError(f"{row.where}: unknown tier {row.label!r} (tiers: {', '.join(TIERS)})")
        by_tier[str(row.label)][0].append(text)
        by_tier[str(row.label)][1].append(index[names[label]])
    return Collected(data.record, by_tier)


def take_tiers(
    tiers: dict[str, Pairs], enabled: Sequence[str], cap: int | None
) -> tuple[Pairs, dict[str, int]]:
    """The enabled tiers' examples in trust order (human, pseudo, hard) up to ``cap``; and how many of each."""
    texts: list[str] = []
    labels: list[int] = []
    used = {tier: 0 for tier in TIERS}
    for tier in TIERS:
        if tier not in enabled:
            continue
        room = len(tiers[tier][0]) if cap is None else max(0, cap - len(texts))
        texts += tiers[tier][0][:room]
        labels += tiers[tier][1][:room]
        used[tier] = min(room, len(tiers[tier][0]))
    return (texts, labels), used


@dataclass(frozen=True)
class ModelSlices:
    """The model's own slices of its domain: what it trained on (replay) and the validation part."""

    spec: DeriveData
    private: Pairs
    validation: Pairs
    fingerprints: dict[str, str]


def recorded_spec(record: ModelRecord) -> dict[str, Any] | None:
    """The data spec a model's recipe recorded: an adapt's ``replay_data``, else derive's ``data``."""
    recipe = record.recipe
    spec = recipe.get("replay_data") or (recipe.get("derive") or {}).get("data")
    return spec if isinstance(spec, dict) else None


def model_slices(record: ModelRecord, domain: str, given: DeriveData | None) -> ModelSlices:
    """Re-read the private slice ``record`` trained on and the validation part of ``domain``.

    Raises:
        ConfigError: no spec to read them with, or a spec whose slices differ from the recorded ones.
    """
    recorded = {k: record.fingerprints.get(k) for k in SLICES}
    raw = recorded_spec(record)
    if (given is None and raw is None) or not all(recorded.values()):
        raise ConfigError(
            f"replay_data: model {record.id} records no data spec and slice fingerprints (it was not made "
            "by `fanbu derive` or `fanbu adapt`); adapt a derived small model"
        )
    where = "the replay_data given" if given is not None else f"the data spec recorded with model {record.id}"
    try:
        spec = given if given is not None else DeriveData.model_validate(raw)
        bench = benchmark_of(spec)
        if bench.domain(domain).task != "classification":
            raise ConfigError(
                f"domain: {domain!r} is a {bench.domain(domain).task} task; adapt needs a classifier"
            )
        private, validation = bench.private(domain), bench.validation(domain)
    except (DomainError, ValueError) as exc:
        raise ConfigError(
            f"replay_data: cannot re-read {where} ({exc}); set replay_data to the data section the model's "
            "derive recipe used"
        ) from None
    found = {"private": private.fingerprint, "validation": validation.fingerprint}
    for name in SLICES:
        if found[name] != recorded[name]:
            raise ConfigError(
                f"replay_data: {where} gives another {name} slice of {domain!r} than model {record.id} "
                f"recorded (fingerprint {found[name][:12]}... != {str(recorded[name])[:12]}...); restore "
                "its files, or set replay_data to the data section its derive recipe used"
            )
    return ModelSlices(
        spec,
        pairs(private, spec.max_train, spec.seed),  # derive's cap and seed: the slice it trained on
        pairs(validation, spec.max_validation, spec.seed),
        found,
    )


def replay_sample(private: Pairs, count: int, seed: int) -> Pairs:
    """``count`` examples of the private slice (all of them when it has fewer), drawn with ``seed``."""
    texts, labels = private
    chosen = sorted(random.Random(seed).sample(range(len(texts)), min(count, len(texts))))
    return [texts[i] for i in chosen], [labels[i] for i in chosen]
