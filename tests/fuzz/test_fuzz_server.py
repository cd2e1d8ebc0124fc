"""Property-based fuzzing of the HTTP API: Schemathesis drives the ASGI app in-process.

Every operation of the published OpenAPI schema is called with generated headers and bodies: valid by
the schema, and Schemathesis' negative ones (wrong types, missing or extra fields, bytes that are not
JSON), with the right token, without one and with a wrong one. Every answer must

* never be a 5xx: bad input is the client's fault, and only a real internal failure may answer 500;
* conform to the schema: a documented status code, its content type, its headers and its body schema;
* for every 4xx, be the JSON error shape ``{"error", "message", "limit"}``.

Random names almost never hit a served model, so two times in three a valid body is steered deeper: a known
model (``small``, the cascade ``edge``, the two-head ``multi``, pinned versions), a known head or label,
a prediction id answered earlier in the run, and texts no client should send (lone surrogates, NUL,
texts over the limits, emoji, right-to-left, control characters). Requests and answers are counted and
the counts asserted, so a run that silently generated nothing, or never got past validation, fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis.python import asgi

from fanbu.bench.reliability.fuzz_api import ApiFuzzer, Target, run_plan, schema_config
from fanbu.collect.store import LogStore
from fanbu.config import validate
from fanbu.registry import Registry
from fanbu.serve import ServeConfig, create_app
from fanbu.serve.security import resolve_token
from tests.fuzz.budget import SCALE, examples
from tests.serve.helpers import TOKEN, database_url, register_tiny, store_urls

LIMITS = {"max_body_bytes": 16_384, "max_batch_texts": 8, "max_text_chars": 2_000}
CASCADES = {"edge": {"small": "small", "large": "large", "threshold": 0.5}}
# Served: small:v0 (the cascade's), small:v1 (registered once the server runs), large:v0, multi:v0.
SERVED = ["small", "edge", "multi", "large", "small:v0", "small:v1", "multi:v0", "large:v0"]
HEADS = ["topic", "topic", "mood"]
LABELS = ["sci", "talk", "rec", "neg", "pos"]
MIN_REQUESTS = 1_000
# SQLite runs the whole plan; PostgreSQL (where FANBU_TEST_PG_URL is set) half, to keep the file in a minute.
SHARE = {"sqlite": 1.0, "postgresql": 0.5}


@pytest.fixture(params=store_urls())
def fuzzer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiFuzzer, float]]:
    """The app on a registry and log store in SQLite, or in PostgreSQL where FANBU_TEST_PG_URL is set."""
    with database_url(request.param, tmp_path) as url:
        registry = Registry.open(tmp_path / "home", url)
        register_tiny(registry, "small", seed=0)
        register_tiny(registry, "large", seed=1, hidden=48)
        register_tiny(registry, "multi", seed=2, heads={"topic": ["sci", "talk", "rec"], "mood": ["neg", "pos"]})
        store = LogStore(registry.url)
        config = validate(ServeConfig, {"token": TOKEN, "cascades": CASCADES, "limits": LIMITS})
        app = create_app(config, registry, store, resolve_token(TOKEN, None)[0])
        try:
            # Loads /openapi.json through the app, which starts its lifespan (the cascade loads small:v0).
            schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schema_config())
            register_tiny(registry, "small", seed=3)  # small:v1, so that a reload has something to swap
            target = Target(TOKEN, SERVED, HEADS, LABELS, LIMITS["max_text_chars"])
            yield ApiFuzzer(schema, target), SHARE[request.param]
        finally:
            asgi.shutdown_lifespans()  # the app's lifespan outlives requests: stop it before its store closes
            store.close()
            registry.close()


def test_fuzz_every_operation(fuzzer: tuple[ApiFuzzer, float]) -> None:
    api, share = fuzzer
    started = time.perf_counter()
    tally = run_plan(api, scale=share * SCALE)
    print(f"\n{tally.requests} requests in {time.perf_counter() - started:.1f} s")
    print(f"answers {sorted(tally.answers.items())}\nerrors {sorted(tally.errors.items())}")
    if tally.failures:
        pytest.fail(
            f"{tally.responses_5xx} 5xx, {tally.schema_violations} other violations; the first:\n\n"
            + "\n\n".join(tally.failures), pytrace=False,
        )
    assert tally.responses_5xx == tally.schema_violations == 0
    assert tally.requests >= examples(round(MIN_REQUESTS * share)), tally.requests
    # Deep enough: predictions and feedback answered, reloads done, refusals from past the schema.
    assert tally.answers[("/v1/predict", 200)] >= examples(round(20 * share)), tally.answers
    assert tally.answers[("/v1/feedback", 200)] >= 1, tally.answers
    assert tally.answers[("/v1/models/reload", 200)] >= 1, tally.answers
    deep = ["invalid_request", "unknown_model", "unknown_prediction", "body_too_large"]
    if examples(round(MIN_REQUESTS * share)) >= MIN_REQUESTS:
        deep.append("invalid_text")  # a few per cent of the predict requests: asserted on the whole plan only
    for code in deep:
        assert tally.errors[code] >= 1, (code, tally.errors)
