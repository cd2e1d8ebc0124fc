"""The data a derivation sees for one domain, under the benchmark protocol.

A domain's small model trains on the domain's **private** slice (never seen by the large model);
model selection uses the validation split; the test split is only ever scored. Distillation may add
public unlabeled text (``transfer``) on which only the teacher's soft labels apply.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.data.builtin import default_benchmark
from fanbu.data.domain import Benchmark, Split
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.errors import ConfigError, DomainError

Pairs = tuple[list[str], list[int]]


class DeriveData(Strict):
    """Which domains to derive for and how much of their data to use."""

    source: Literal["default", "files"] = Field(
        "default", description="default: the built-in 20 Newsgroups benchmark; files: the `domains` list."
    )
    domains: list[str] | None = Field(None, description="Derive only for these domain names (default: all).")
    files: list[DomainSource] = Field(default_factory=list, description="Your own domains (source: files).")
    seed: int = Field(0, description="Seeds splits and subsampling.")
    public_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train that is public (the rest is private)."
    )
    max_train: int | None = Field(None, ge=1, description="Cap on private training examples per domain.")
    max_validation: int | None = Field(200, ge=1, description="Cap on validation examples per domain.")
    max_test: int | None = Field(None, ge=1, description="Cap on test examples per domain.")
    transfer: Literal["none", "public"] = Field(
        "none", description="Extra unlabeled distillation text: none, or every domain's public slice."
    )
    max_transfer: int | None = Field(
        None, ge=1, description="Cap on transfer texts: the domain's own public slice first, then the others in turn."
    )

    @model_validator(mode="after")
    def _check(self) -> DeriveData:
        if self.source == "files" and not self.files:
            raise ValueError("source is 'files' but no files are listed; add domains under data.files")
        return self


@dataclass(frozen=True)
class DomainData:
    """One domain's slices, ready for training and scoring."""

    name: str
    label_names: tuple[str, ...]
    train: Pairs
    validation: Pairs
    test: Pairs
    transfer: tuple[str, ...]
    fingerprints: dict[str, str]


def _pairs(split: Split, cap: int | None, seed: int) -> Pairs:
    if cap is not None:
        split = split.subsample(cap, seed)
    return list(split.texts), list(split.labels or ())


def _benchmark(settings: DeriveData) -> Benchmark:
    if settings.source == "default":
        return default_benchmark(seed=settings.seed, public_fraction=settings.public_fraction)
    domains = tuple(load_domain(source) for source in settings.files)
    return Benchmark(domains, (), settings.public_fraction, settings.seed)


def domain_names(settings: DeriveData) -> list[str]:
    """The domains a recipe derives for, checked against what the data source has."""
    available = (
        [d.name for d in default_benchmark(seed=settings.seed).domains]
        if settings.source == "default"
        else [s.name for s in settings.files]
    )
    wanted = settings.domains or available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ConfigError(f"data.domains: unknown {unknown}; available: {', '.join(available)}")
    return list(wanted)


def load_domain_data(settings: DeriveData, name: str) -> DomainData:
    """The private/validation/test slices of one domain (and public transfer text when asked)."""
    bench = _benchmark(settings)
    domain = bench.domain(name)
    if domain.task != "classification":
        raise DomainError(
            f"domain {name!r} is a {domain.task} task; the encoder derive path needs classification"
        )
    private = bench.private(name)
    train = _pairs(private, settings.max_train, settings.seed)
    transfer: tuple[str, ...] = ()
    if settings.transfer == "public":
        others = [bench.public(d.name).texts for d in bench.domains if d.name != name]
        interleaved = [t for group in itertools.zip_longest(*others) for t in group if t is not None]
        own = bench.public(name).texts if any(d.name == name for d in bench.domains) else ()
        transfer = tuple([*own, *interleaved][: settings.max_transfer])
    return DomainData(
        name=name,
        label_names=domain.label_names,
        train=train,
        validation=_pairs(domain.validation, settings.max_validation, settings.seed),
        test=_pairs(domain.test, settings.max_test, 0),
        transfer=transfer,
        fingerprints={
            "private": private.fingerprint,
            "validation": domain.validation.fingerprint,
            "test": domain.test.fingerprint,
        },
    )
