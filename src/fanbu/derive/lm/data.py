"""The text a causal-LM derivation sees for one domain, under the split rule.

A domain's models train on its train split; early stopping and every choice read the validation
split; the test split is only scored, once, for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.data.builtin import bbc_news_lm_domains
from fanbu.data.domain import Domain
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.errors import ConfigError, DomainError
from fanbu.io import sha256_json


class LMDeriveData(Strict):
    """Which causal-LM domains to derive for, and how much of their text to use."""

    source: Literal["bbc", "files"] = Field(
        "bbc", description="bbc: one domain per BBC News category (bbc-business, ...); files: your own."
    )
    files: list[DomainSource] = Field(
        default_factory=list, description="Your own domains (source: files), each with task: causal_lm."
    )
    domains: list[str] | None = Field(None, description="Only these domains (default: all of the source's).")
    seed: int = Field(0, description="Seeds the train/validation carving.")
    max_docs: int | None = Field(
        None, ge=10, description="bbc: cap on articles per category before splitting."
    )
    max_train: int | None = Field(None, ge=1, description="Cap on training texts per domain.")
    max_validation: int | None = Field(
        40, ge=1, description="Cap on validation texts (early stopping, choices)."
    )
    max_test: int | None = Field(60, ge=1, description="Cap on test texts (scored once, for the report).")

    @model_validator(mode="after")
    def _check(self) -> LMDeriveData:
        if self.source == "files" and not self.files:
            raise ValueError("source is 'files' but no files are listed; add domains under data.files")
        if self.source == "bbc" and self.files:
            raise ValueError("files are given but source is 'bbc'; set source: files")
        return self


@dataclass(frozen=True)
class LMDomainData:
    """One LM domain's texts, ready for training and scoring."""

    name: str
    train: list[str]
    validation: list[str]
    test: list[str]
    fingerprints: dict[str, str]


def source_domains(settings: LMDeriveData) -> list[Domain]:
    """Every domain of the settings' source, checked to be causal-LM domains."""
    if settings.source == "bbc":
        domains = bbc_news_lm_domains(seed=settings.seed, max_docs=settings.max_docs)
    else:
        domains = [load_domain(source) for source in settings.files]
    for domain in domains:
        if domain.task != "causal_lm":
            raise DomainError(
                f"domain {domain.name!r} is a {domain.task} task, but this recipe has task: causal_lm; derive "
                "LMs from plain-text domains (task: causal_lm in data.files), or derive classifiers with a "
                "classification recipe (recipes/derive.yaml)"
            )
    return domains


def lm_domain_names(settings: LMDeriveData) -> list[str]:
    """The domains the settings name (all of the source's by default), checked against the source."""
    known = [d.name for d in source_domains(settings)]
    if settings.domains is None:
        return known
    unknown = [name for name in settings.domains if name not in known]
    if unknown:
        raise ConfigError(f"data.domains: {unknown} are not in the source (domains: {', '.join(known)})")
    return list(settings.domains)


def load_lm_domain(settings: LMDeriveData, name: str) -> LMDomainData:
    """The train/validation/test texts of one LM domain (capped as the settings say)."""
    domain = next((d for d in source_domains(settings) if d.name == name), None)
    if domain is None:
        raise ConfigError(f"data.domains: {name!r} is not a domain of source {settings.source!r}")

    def cap(texts: Any, limit: int | None) -> list[str]:
        return [str(t) for t in texts][:limit]

    train = cap(domain.train.texts, settings.max_train)
    validation = cap(domain.validation.texts, settings.max_validation)
    test = cap(domain.test.texts, settings.max_test)
    if not train or not validation or not test:
        raise DomainError(
            f"domain {name!r}: train, validation and test each need texts; add data or lower caps"
        )
    prints = {"train": sha256_json(train), "validation": sha256_json(validation), "test": sha256_json(test)}
    return LMDomainData(name, train, validation, test, prints)
