"""Fuzz the domain loaders: JSONL, JSON, CSV and Parquet files with broken rows, encodings and bytes.

The generators and the contract live in :mod:`fanbu.bench.reliability.fuzz_loaders` (``fanbu bench
reliability`` runs them over more cases): :func:`fanbu.data.loaders.load_domain` either loads the file
correctly (every text a non-empty str that encodes as UTF-8, every label a valid id, every split
non-empty) or raises :class:`~fanbu.errors.DomainError` naming the file, and the line or row when one
row is at fault. No other exception ever escapes. When a file is written losslessly and every row is
valid, the load must succeed and give back exactly the rows written, each with its own label. Each
format is a test of its own; every case must run, and any failure fails the test with its examples.
"""

from __future__ import annotations

import time

import pytest

from fanbu.bench.reliability.fuzz_loaders import WEIGHTS, LoaderTally, run_loader_fuzz
from tests.fuzz.budget import examples


def check_format(fmt: str) -> LoaderTally:
    """Fuzz ``fmt`` with its CI share of cases (:data:`WEIGHTS`, scaled); fail on any failure."""
    want = examples(WEIGHTS[fmt])
    started = time.perf_counter()
    tally = run_loader_fuzz(want, formats=[fmt])
    print(f"\n{fmt}: {tally.cases} files in {time.perf_counter() - started:.1f} s: {tally.loaded} loaded "
          f"({tally.exact} compared row for row), {tally.refused} refused")
    if tally.failures:
        pytest.fail(
            f"{tally.tracebacks} tracebacks, {tally.contract_violations} contract violations, "
            f"{tally.fuzzer_errors} fuzzer errors; the first:\n\n" + "\n\n".join(tally.failures), pytrace=False,
        )
    assert tally.tracebacks == tally.contract_violations == tally.fuzzer_errors == 0
    assert tally.cases_by_format[fmt] == tally.cases >= want, f"{fmt}: only {tally.cases} of {want} fuzz cases ran"
    assert tally.loaded + tally.refused == tally.cases, tally
    return tally


def test_fuzz_jsonl_files() -> None:
    check_format("jsonl")


def test_fuzz_json_files() -> None:
    check_format("json")


def test_fuzz_csv_files() -> None:
    check_format("csv")


def test_fuzz_parquet_files() -> None:
    check_format("parquet")


def test_seeded_runs_repeat() -> None:
    """With a seed, the bench's runs generate the same cases (and without one, others)."""
    first, again = run_loader_fuzz(33, seed=7), run_loader_fuzz(33, seed=7)
    assert first.digest == again.digest and first.cases_by_format == again.cases_by_format
    assert first.cases_by_format == {fmt: share // 10 for fmt, share in WEIGHTS.items()}, first.cases_by_format
    assert run_loader_fuzz(33, seed=8).digest != first.digest
