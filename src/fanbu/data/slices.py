"""The one slice spec: which benchmark a recipe reads, which of its domains, and how much of each split.

Every recipe's ``data`` section is a :class:`SliceSpec` (derive's, feedback's, federated's), each
adding only its own fields (caps of the slices it alone reads). The demo's ``benchmark`` section,
which always reads the built-in benchmark, is its seed, public share and caps: a :class:`SliceCaps`.
:func:`benchmark_of` builds the benchmark a spec describes, :func:`domain_names` checks the domains it
names, and :func:`pairs` / :func:`split_pairs` read capped ``(texts, labels)`` out of its splits.

The split rule: ``validation`` (the training-time part of a domain's validation split) is for
training-time choices, ``gate`` (the rest of it, disjoint) for promotion and strategy choice, and
``test`` only for reporting. Nothing that decides reads ``test``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.data import sampling
from fanbu.data.builtin import default_benchmark
from fanbu.data.domain import Benchmark, Split
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.errors import ConfigError

Pairs = tuple[list[str], list[int]]
SplitName = Literal["public", "private", "validation", "gate", "test"]


class SliceCaps(Strict):
    """How the benchmark is cut (seed, public share, gate share), and how much of validation and test to read."""

    seed: int = Field(0, description="Seeds splits and subsampling.")
    public_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of a domain's train split that is public (the rest is private)."
    )
    gate_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of each task's validation split set aside as its gate split, which only promotion "
        "and strategy choice read; the rest stays validation for training-time choices (early stopping, "
        "selection, search). The test split is scored for the report only.",
    )
    max_validation: int | None = Field(
        200, ge=1, description="Cap on validation examples per domain (of the validation part, gate split excluded)."
    )
    max_test: int | None = Field(
        None, ge=1, description="Cap on test examples per task (scored for the report only; no decision reads it)."
    )


class SliceSpec(SliceCaps):
    """A recipe's data: the built-in benchmark or your own domains (files), which of them, the caps."""

    source: Literal["default", "files"] = Field(
        "default", description="default: the built-in 20 Newsgroups benchmark; files: the `files` list."
    )
    domains: list[str] | None = Field(None, description="Only these domains (default: all of the source's).")
    files: list[DomainSource] = Field(default_factory=list, description="Your own domains (source: files).")
    heldout_files: list[DomainSource] = Field(
        default_factory=list, description="Held-out tasks of your own (source: files), scored for forgetting."
    )

    @model_validator(mode="after")
    def _check_source(self) -> SliceSpec:
        if self.source == "files" and not self.files:
            raise ValueError("source is 'files' but no files are listed; add domains under data.files")
        if self.source == "default" and (self.files or self.heldout_files):
            raise ValueError("files / heldout_files are given but source is 'default'; set source: files")
        return self


def benchmark_of(spec: SliceCaps) -> Benchmark:
    """The benchmark ``spec`` describes: the built-in one, or its files and held-out files."""
    if not isinstance(spec, SliceSpec) or spec.source == "default":
        bench = default_benchmark(seed=spec.seed, public_fraction=spec.public_fraction)
        return replace(bench, gate_fraction=spec.gate_fraction)
    return Benchmark(
        tuple(load_domain(source) for source in spec.files),
        tuple(load_domain(source) for source in spec.heldout_files),
        spec.public_fraction,
        spec.seed,
        spec.gate_fraction,
    )


def domain_names(spec: SliceSpec, bench: Benchmark | None = None) -> list[str]:
    """The domains ``spec`` names (all of its source's by default), checked against the source.

    ``bench``: the spec's benchmark when it is built already (else the names are read without loading
    the files).

    Raises:
        ConfigError: a named domain is not in the source.
    """
    if bench is not None:
        available = [d.name for d in bench.domains]
    elif spec.source == "default":
        available = [d.name for d in default_benchmark(seed=spec.seed).domains]
    else:
        available = [s.name for s in spec.files]
    wanted = list(spec.domains or available)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(f"data.domains: unknown {unknown}; available: {', '.join(available)}")
    return wanted


def pairs(split: Split, cap: int | None, seed: int) -> Pairs:
    """The texts and labels of ``split``, stratified-subsampled to ``cap`` with ``seed`` (None: all)."""
    if cap is not None:
        split = split.subsample(cap, seed)
    return list(split.texts), list(split.labels or ())


def traffic_pairs(private: Split, used: int | None, seed: int, size: int, block: int = 0) -> Pairs:
    """Simulated traffic of a domain: ``size`` examples of its private slice that :func:`pairs` with
    ``(used, seed)`` did **not** take, so no model trained on the ``used`` examples has seen them.

    They are shuffled with ``seed`` and cut into blocks of ``size``; ``block`` picks one (the cycle's
    generation: each generation serves fresh texts). Raises ConfigError when the slice has no such block.
    """
    if used is None or used >= len(private):
        rest = Split(texts=(), labels=() if private.labels is not None else None)
    else:
        taken = set(sampling.sample_indices(private.labels, len(private), used, seed).tolist())
        rest = private.select(i for i in range(len(private)) if i not in taken)
    order = sampling.shuffle_indices(len(rest), seed + 1)
    start = block * size
    if size < 1 or start + size > len(rest):
        raise ConfigError(
            f"traffic: {len(rest)} private example(s) are left after the {used} used for training, too few "
            f"for block {block} of {size}; lower the traffic size, lower the training cap (max_train), or "
            "add data"
        )
    chosen = rest.select(order[start : start + size].tolist())
    return list(chosen.texts), list(chosen.labels or ())


def split_of(bench: Benchmark, name: str, split: SplitName) -> Split:
    """One split of task ``name``: its public or private slice, its validation part, gate or test split."""
    if split == "public":
        return bench.public(name)
    if split == "private":
        return bench.private(name)
    if split == "validation":
        return bench.validation(name)
    if split == "gate":
        return bench.gate(name)
    return bench.domain(name).test


def split_pairs(
    bench: Benchmark, split: SplitName, names: Iterable[str], cap: int | None, seed: int
) -> dict[str, Pairs]:
    """:func:`pairs` of one split of each task in ``names``, in that order."""
    return {name: pairs(split_of(bench, name, split), cap, seed) for name in names}
