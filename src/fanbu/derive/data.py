"""The data a derivation sees for one domain, under the benchmark protocol.

A domain's small model trains on the domain's **private** slice (never seen by the large model);
model selection (early stopping, search) uses the validation part of the domain's validation split
(``Benchmark.validation``: the gate split, which promotion reads, is kept out); the test split is only
ever scored, for the report. Distillation may add
public unlabeled text (``transfer``) on which only the teacher's soft labels apply.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from fanbu.data.loaders import DomainSource
from fanbu.data.slices import Pairs, SliceCaps, SliceSpec, benchmark_of, pairs
from fanbu.errors import DomainError


class DeriveData(SliceSpec):
    """Which domains to derive for and how much of their data to use (a :class:`SliceSpec` plus the
    private training cap and the transfer text)."""

    max_train: int | None = Field(None, ge=1, description="Cap on private training examples per domain.")
    transfer: Literal["none", "public"] = Field(
        "none", description="Extra unlabeled distillation text: none, or every domain's public slice."
    )
    max_transfer: int | None = Field(
        None, ge=1, description="Cap on transfer texts: the domain's own public slice first, then the others in turn."
    )
    # derive never reads held-out tasks: refused when given, and left out of the recipe's dump
    heldout_files: list[DomainSource] = Field(default_factory=list, exclude=True)

    @model_validator(mode="after")
    def _no_heldout(self) -> DeriveData:
        if self.heldout_files:
            raise ValueError(
                "heldout_files: derive makes models for the domains only and never reads held-out tasks; "
                "remove them"
            )
        return self

    @classmethod
    def of(
        cls,
        spec: SliceCaps,
        domains: list[str] | None,
        max_train: int | None,
        transfer: Literal["none", "public"] = "none",
        max_transfer: int | None = None,
    ) -> DeriveData:
        """The derive data for ``domains`` with the same source, seed, splits and caps as ``spec``."""
        source = {"source": spec.source, "files": spec.files} if isinstance(spec, SliceSpec) else {}
        return cls(
            **source,
            domains=domains,
            seed=spec.seed,
            public_fraction=spec.public_fraction,
            gate_fraction=spec.gate_fraction,
            max_train=max_train,
            max_validation=spec.max_validation,
            max_test=spec.max_test,
            transfer=transfer,
            max_transfer=max_transfer,
        )


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


def load_domain_data(settings: DeriveData, name: str) -> DomainData:
    """The private/validation/test slices of one domain (and public transfer text when asked)."""
    bench = benchmark_of(settings)
    domain = bench.domain(name)
    if domain.task != "classification":
        raise DomainError(
            f"domain {name!r} is a {domain.task} task; the encoder derive path needs classification"
        )
    private, validation = bench.private(name), bench.validation(name)
    train = pairs(private, settings.max_train, settings.seed)
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
        validation=pairs(validation, settings.max_validation, settings.seed),
        test=pairs(domain.test, settings.max_test, 0),
        transfer=transfer,
        fingerprints={
            "private": private.fingerprint,
            "validation": validation.fingerprint,
            "test": domain.test.fingerprint,
        },
    )
