"""The bench's fuzzing part: the API of a server over the registry under test, the loaders, the recipes.

The API is fuzzed in-process (Schemathesis through the app's published schema) on the models the
demo made: the small ``comp`` model, its cascade and the large model, with the server's real limits.
The loaders and recipes are fuzzed with the generators the CI tests use, at the bench's counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.python import asgi

from fanbu.bench.reliability.fuzz_api import PLAN, ApiFuzzer, Target, run_plan, schema_config
from fanbu.bench.reliability.fuzz_loaders import run_loader_fuzz
from fanbu.bench.reliability.fuzz_recipes import run_recipe_fuzz, shipped_recipes
from fanbu.bench.reliability.plan import ReliabilityPlan
from fanbu.collect.store import LogStore
from fanbu.config import validate
from fanbu.registry import Registry
from fanbu.serve import ServeConfig, create_app
from fanbu.serve.models import read_labels
from fanbu.serve.security import resolve_token

#: Requests one pass of :data:`fanbu.bench.reliability.fuzz_api.PLAN` sends (the counts are scaled to the plan's).
PLAN_REQUESTS = sum(p + n + 2 * u * (2 if n else 1) for _, _, p, n, u in PLAN)


def fuzz_api(plan: ReliabilityPlan, home: Path, token: str) -> dict[str, Any]:
    """Fuzz every operation of a server over ``home`` (in-process); counts and the first failures."""
    registry = Registry.open(home)
    store = LogStore(registry.url)
    small = registry.latest(plan.model)
    config = validate(ServeConfig, {
        "token": token,
        "models": [plan.model, "large"],
        "cascades": {plan.cascade: {"small": plan.model, "large": "large"}},
        "limits": {"max_text_chars": plan.max_text_chars},
    })
    app = create_app(config, registry, store, resolve_token(token, None)[0])
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schema_config())
        labels = read_labels(small) if small is not None else {}
        target = Target(
            token,
            served=[plan.model, plan.cascade, "large", f"{plan.model}:v0", "large:v0"],
            heads=sorted(labels),
            labels=sorted({name for names in labels.values() for name in names}),
            max_text_chars=plan.max_text_chars,
        )
        # Hypothesis sends fewer than asked where an operation has few distinct requests (GET /health):
        # 1989 of 2000 in the first quick run, so the plan asks for 5% more.
        tally = run_plan(ApiFuzzer(schema, target), scale=1.05 * plan.fuzz_requests / PLAN_REQUESTS)
    finally:
        asgi.shutdown_lifespans()
        store.close()
        registry.close()
    return {
        "requests": tally.requests,
        "responses_5xx": tally.responses_5xx,
        "schema_violations": tally.schema_violations,
        "answers": {f"{path} {status}": n for (path, status), n in sorted(tally.answers.items())},
        "errors": dict(sorted(tally.errors.items())),
        "failures": tally.failures,
    }


def fuzz_all(
    plan: ReliabilityPlan, home: Path, token: str, seed: int, validate_recipe: Callable[[Path], Any]
) -> dict[str, Any]:
    """The API, the loaders and the recipes; the issue's ``fuzz.*`` figures and the first failures.

    ``validate_recipe`` is ``fanbu validate``'s function (:func:`fanbu.recipes.validate_file`), passed
    in by the command line: the recipes module sits above the benches.
    """
    api = fuzz_api(plan, home, token)
    loaders = run_loader_fuzz(plan.loader_cases, seed=seed)
    recipes = run_recipe_fuzz(plan.recipe_cases, shipped_recipes(), seed=seed, validate=validate_recipe)
    return {
        "requests": api["requests"],
        "responses_5xx": api["responses_5xx"],
        "schema_violations": api["schema_violations"],
        "loaders_cases": loaders.cases,
        "loader_tracebacks": loaders.tracebacks,
        "loader_contract_violations": loaders.contract_violations,
        "loader_fuzzer_errors": loaders.fuzzer_errors,
        "recipe_cases": recipes.cases,
        "recipe_tracebacks": recipes.tracebacks,
        "recipe_contract_violations": recipes.contract_violations,
        "recipe_fuzzer_errors": recipes.fuzzer_errors,
        "api": api,
        "failures": {"loaders": loaders.failures, "recipes": recipes.failures},
    }
