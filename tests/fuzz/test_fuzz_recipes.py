"""Fuzz recipe validation: random mutations of every shipped recipe, and broken YAML files.

The generators and the contract live in :mod:`fanbu.bench.reliability.fuzz_recipes` (``fanbu bench
reliability`` runs them over more cases): :func:`fanbu.recipes.validate_file` (what ``fanbu validate``
runs) either accepts the recipe, or raises :class:`~fanbu.errors.ConfigError` whose message holds the
dotted path of the bad field (``derive.stages.0.prune.layers``) or, for a file that is not a recipe at
all, names the file. No other exception ever escapes. An accepted recipe resolves
(``recipe.resolved.yaml``) to a file that validates to the same recipe. Every case must run, and any
failure fails the test with its examples.
"""

from __future__ import annotations

import time

import pytest
import yaml

from fanbu.bench.reliability.fuzz_recipes import (
    MIN_SHIPPED,
    WEIGHTS,
    RecipeTally,
    run_recipe_fuzz,
    shipped_recipes,
)
from fanbu.recipes import validate_file
from tests.fuzz.budget import examples

SHIPPED = shipped_recipes()


def check_part(part: str) -> RecipeTally:
    """Fuzz ``part`` of every shipped recipe with its CI share of cases (:data:`WEIGHTS`, scaled); fail
    on any failure."""
    want = examples(WEIGHTS[part])
    started = time.perf_counter()
    tally = run_recipe_fuzz(want, SHIPPED, validate=validate_file, parts=[part])
    print(f"\n{part}: {tally.cases} cases in {time.perf_counter() - started:.1f} s: {tally.accepted} accepted, "
          f"{tally.refused} refused; per recipe {dict(tally.cases_by_recipe)}")
    if tally.failures:
        pytest.fail(
            f"{tally.tracebacks} tracebacks, {tally.contract_violations} contract violations, "
            f"{tally.fuzzer_errors} fuzzer errors; the first:\n\n" + "\n\n".join(tally.failures), pytrace=False,
        )
    assert tally.tracebacks == tally.contract_violations == tally.fuzzer_errors == 0
    assert tally.cases_by_part[part] == tally.cases >= want, f"{part}: only {tally.cases} of {want} fuzz cases ran"
    assert tally.accepted + tally.refused == tally.cases, tally
    if want >= 20 * len(SHIPPED):  # enough cases that every recipe is drawn
        assert set(tally.cases_by_recipe) == {path.name for path in SHIPPED}, tally.cases_by_recipe
    return tally


def test_shipped_recipes_are_fuzzed() -> None:
    assert len(SHIPPED) >= MIN_SHIPPED, f"only {len(SHIPPED)} shipped recipes found: {SHIPPED}"
    for path in SHIPPED:
        assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict), path.name


def test_fuzz_recipe_mutations() -> None:
    check_part("mutations")


def test_fuzz_broken_recipe_files() -> None:
    check_part("files")


def test_seeded_runs_repeat() -> None:
    """With a seed, the bench's runs generate the same cases (and without one, others)."""
    first = run_recipe_fuzz(6, SHIPPED, seed=7, validate=validate_file)
    again = run_recipe_fuzz(6, SHIPPED, seed=7, validate=validate_file)
    assert first.digest == again.digest and first.cases_by_part == again.cases_by_part
    assert dict(first.cases_by_part) == {"mutations": 4, "files": 2}, first.cases_by_part
    assert run_recipe_fuzz(6, SHIPPED, seed=8, validate=validate_file).digest != first.digest
