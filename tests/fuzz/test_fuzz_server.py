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

import json
import operator
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi

from fanbu.collect.store import LogStore
from fanbu.config import validate
from fanbu.registry import Registry
from fanbu.serve import ServeConfig, create_app
from fanbu.serve.security import resolve_token
from tests.fuzz.budget import examples
from tests.serve.helpers import TOKEN, database_url, register_tiny, store_urls

POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
LIMITS = {"max_body_bytes": 16_384, "max_batch_texts": 8, "max_text_chars": 2_000}
CASCADES = {"edge": {"small": "small", "large": "large", "threshold": 0.5}}
PROTECTED = ("/v1/", "/metrics")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
AUTH = {"token": "the token", "none": "no token", "wrong": "a wrong token"}
# Schemathesis' own list lacks 413: a negative body may well be refused for its size first.
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

# Served: small:v0 (the cascade's), small:v1 (registered once the server runs), large:v0, multi:v0.
SERVED = ["small", "edge", "multi", "large", "small:v0", "small:v1", "multi:v0", "large:v0"]
# Not served; NUL is no name a SQL store can be asked for (PostgreSQL refuses it in a parameter).
UNSERVED = [
    "small:v9",
    "edge:v0",
    "small:v1:v2",
    "small:v-1",
    " small",
    "Small",
    "small\x00",
    "\ud800",
    "x" * 300,
]
ODD_IDS = ["\x00", "a\x00b", "0" * 64, "' OR '1'='1", "%s%s", "../../registry.db", "\ud800", "🔥"]
HEADS = ["topic", "topic", "mood", "Topic", "", "\x00"]
LABELS = ["sci", "talk", "rec", "neg", "pos", "SCI", "", "sci\x00"]
ODD_TEXTS = [
    "\ud800",  # lone surrogates: valid as JSON escapes, not Unicode text
    "ok \udfff end",
    "\udbff\udc00",  # a surrogate pair as two escapes: JSON reads it as one character, U+10FC00
    "a\x00b",
    "\x00",
    "👩🏽‍💻🔥🇯🇵 e\u0301\u0301\u0301",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום \u202e!dlrow olleh\u202c \u200f\u200e",
    "\x01\x02\x1b[31mred\x7f\x85",
    "\r\n\t\x0b\x0c\u2028\u2029",
    "\ufeffbom \ufffe\uffff\U0010ffff",
    "",
    "   ",
    "ﷺ" * 40,
    "𒐫" * 300,
]
# Every code point, surrogates and controls included, leaning on the ones tokenizers and stores trip on.
ANY_CHAR = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.characters(categories=("Cs", "Cc", "Cf", "Mn", "So", "Zl", "Zp")),
)
TEXT = st.one_of(
    st.text(max_size=60),  # valid Unicode: these should be answered
    st.text(max_size=60),
    st.text(max_size=60),
    st.text(ANY_CHAR, max_size=30),
    st.sampled_from(ODD_TEXTS),
    st.sampled_from(["\x00", "a\x00b", "end\x00"]),  # refused at the edge (invalid_text), never logged
    # Long: about max_text_chars (2000; over it: 422), over max_body_bytes (413; an emoji is 12 bytes of JSON).
    st.builds(operator.mul, st.sampled_from(["x", "é", "👍", "\u202e", "\x00"]), st.integers(1_900, 2_100)),
    st.builds(operator.mul, st.sampled_from(["x", "é ", "👍"]), st.integers(2_000, 30_000)),
)
TEXTS = st.lists(TEXT, min_size=1, max_size=4) | st.lists(TEXT, min_size=5, max_size=12)
WRONG_AUTH = st.one_of(
    st.sampled_from(
        [
            "Bearer wrong-token-0123456789",
            f"Basic {TOKEN}",
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN[:-1]}",
            TOKEN,
            "Bearer",
            "Bearer ",
            "",
        ]
    ),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40).map("Bearer ".__add__),
)


@dataclass
class Tally:
    """What a run sent and got back."""

    requests: int = 0
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    prediction_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Server:
    """The app under test, its schema (loaded through the app) and the tally."""

    schema: schemathesis.BaseSchema
    share: float  # of the plan's examples this store gets
    tally: Tally = field(default_factory=Tally)


@pytest.fixture(params=store_urls())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The app on a registry and log store in SQLite, or in PostgreSQL where FANBU_TEST_PG_URL is set."""
    with database_url(request.param, tmp_path) as url:
        yield from _serve(url, tmp_path, SHARE[request.param])


def _serve(url: str, tmp_path: Path, share: float) -> Iterator[Server]:
    registry = Registry.open(tmp_path / "home", url)
    register_tiny(registry, "small", seed=0)
    register_tiny(registry, "large", seed=1, hidden=48)
    register_tiny(registry, "multi", seed=2, heads={"topic": ["sci", "talk", "rec"], "mood": ["neg", "pos"]})
    store = LogStore(registry.url)
    config = validate(ServeConfig, {"token": TOKEN, "cascades": CASCADES, "limits": LIMITS})
    app = create_app(config, registry, store, resolve_token(TOKEN, None)[0])
    try:
        # Loads /openapi.json through the app, which starts its lifespan (the cascade loads small:v0).
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json",
            app,
            config=schemathesis.Config.from_dict(
                {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
            ),
        )
        register_tiny(registry, "small", seed=3)  # small:v1, so that a reload has something to swap
        yield Server(schema, share)
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan outlives requests: stop it before its store closes
        store.close()
        registry.close()


# --------------------------------------------------------------------------------------- steering

Draw = Callable[[st.SearchStrategy[Any]], Any]


def _steer_predict(body: dict[str, Any], draw: Draw, ids: list[str]) -> dict[str, Any]:
    body["model"] = draw(st.sampled_from([*SERVED, *SERVED, *UNSERVED, body.get("model")]))
    if draw(st.sampled_from(["fuzzed", "kept"])) == "fuzzed":
        body["texts"] = draw(TEXTS)
    head = draw(st.sampled_from(["none", "known", "kept"]))
    if head == "none":
        body.pop("head", None)
    elif head == "known":
        body["head"] = draw(st.sampled_from(HEADS))
    return body


def _steer_feedback(body: dict[str, Any], draw: Draw, ids: list[str]) -> dict[str, Any]:
    body["prediction_id"] = draw(st.sampled_from([*ids[:20], *ODD_IDS, body.get("prediction_id")]))
    label = draw(st.sampled_from(["none", "known", "kept"]))
    if label == "none":
        body.pop("label", None)
    elif label == "known":
        body["label"] = draw(st.sampled_from(LABELS))
    rating = draw(st.sampled_from(["none", "known", "kept"]))
    if rating == "none":
        body.pop("rating", None)
    elif rating == "known":
        body["rating"] = draw(st.integers(1, 5))
    return body


def _steer_reload(body: dict[str, Any], draw: Draw, ids: list[str]) -> dict[str, Any]:
    return draw(st.sampled_from([{}, {"model": draw(st.sampled_from([*SERVED, *UNSERVED]))}, body]))


def _as_sent(body: Any) -> Any:
    """``body`` as the server reads it, in a form Schemathesis can validate against the schema.

    JSON reads a surrogate pair written as two escapes as one character, so such a body is given as
    the server reads it. One left with a lone surrogate cannot be validated (it is no Unicode text), so
    it goes as the JSON bytes; Schemathesis counts those as invalid, which the server must refuse.
    """
    wire = json.dumps(body)
    read = json.loads(wire)
    try:
        json.dumps(read, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return wire.encode("ascii")
    return read


STEER = {"/v1/predict": _steer_predict, "/v1/feedback": _steer_feedback, "/v1/models/reload": _steer_reload}


# ------------------------------------------------------------------------------------------ fuzzing


def _header(response: Any, name: str) -> str:
    """One header of a Schemathesis response (its keys are lower case, its values lists)."""
    return ",".join(response.headers.get(name, []))


def _check_error_shape(response: Any) -> dict[str, Any]:
    """A 4xx is ``{"error": code, "message": text, "limit": name or null}``, as JSON, and nothing else."""
    assert _header(response, "content-type").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) <= {"error", "message", "limit"}, body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert body.get("limit") is None or isinstance(body["limit"], str), body
    if response.status_code == 401:
        assert _header(response, "www-authenticate") == "Bearer", response.headers
    if response.status_code in (429, 503):
        assert _header(response, "retry-after").isdigit(), response.headers
    return body


def fuzz(
    server: Server, method: str, path: str, mode: schemathesis.GenerationMode, auth: str, n: int
) -> None:
    """Send ``n`` generated requests (times the store's share, scaled) to one operation.

    ``auth``: ``token`` (the right one), ``none`` or ``wrong``. A failure is recorded, not raised, so that
    every operation is fuzzed before the test fails.
    """
    operation = server.schema[path][method]
    tally = server.tally
    steer = STEER.get(path) if mode is POSITIVE and auth == "token" else None
    ids = list(tally.prediction_ids[:50])  # fixed before generating, so that examples replay alike
    protected = path.startswith(PROTECTED)

    @settings(
        max_examples=examples(round(n * server.share)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        steerable = steer is not None and (case.body is None or isinstance(case.body, dict))
        if steerable and data.draw(st.sampled_from([True, True, False]), label="steer"):
            case.body = _as_sent(steer(dict(case.body or {}), data.draw, ids))
        if auth == "token":
            headers = {"Authorization": f"Bearer {TOKEN}"}
        else:
            case.headers.pop("Authorization", None)
            headers = {} if auth == "none" else {"Authorization": data.draw(WRONG_AUTH, label="auth")}
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        tally.requests += 1
        status = response.status_code
        tally.answers[(path, status)] += 1
        assert status < 500, response.text  # not_a_server_error has checked it; this says it again
        if auth != "token" and protected:
            assert status == 401, (status, response.text)
        if 400 <= status < 500:
            tally.errors[_check_error_shape(response)["error"]] += 1
        elif path == "/v1/predict" and status == 200:
            tally.prediction_ids.extend(p["id"] for p in response.json()["predictions"])

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 (any failure, listed at the end)
        what = f"{method} {path}, {mode.value} data, {AUTH[auth]}"
        tally.failures.append(f"{what}:\n{''.join(traceback.format_exception_only(exc))}")


# (method, path, examples with the token: positive, negative; without a token and with a wrong one: each)
PLAN = [
    ("GET", "/health", 3, 0, 3),
    ("GET", "/metrics", 3, 10, 10),
    ("GET", "/v1/models", 3, 10, 10),
    ("POST", "/v1/predict", 320, 120, 50),
    ("POST", "/v1/feedback", 160, 80, 40),
    ("POST", "/v1/models/reload", 50, 40, 20),
]
MIN_REQUESTS = 1_000
# SQLite runs the whole plan; PostgreSQL (where FANBU_TEST_PG_URL is set) half, to keep the file in a minute.
SHARE = {"sqlite": 1.0, "postgresql": 0.5}


def test_fuzz_every_operation(server: Server) -> None:
    started = time.perf_counter()
    operations = {(op.ok().method.upper(), op.ok().path) for op in server.schema.get_all_operations()}
    assert operations == {(method, path) for method, path, *_ in PLAN}, "fuzz every operation, no other"
    for method, path, positive, negative, unauthorised in PLAN:
        fuzz(server, method, path, POSITIVE, "token", positive)
        if negative:
            fuzz(server, method, path, NEGATIVE, "token", negative)
        for auth in ("none", "wrong"):
            fuzz(server, method, path, POSITIVE, auth, unauthorised)
            if negative:
                fuzz(server, method, path, NEGATIVE, auth, unauthorised)
    tally = server.tally
    print(f"\n{tally.requests} requests in {time.perf_counter() - started:.1f} s")
    print(f"answers {sorted(tally.answers.items())}\nerrors {sorted(tally.errors.items())}")
    if tally.failures:
        pytest.fail("\n\n".join(tally.failures), pytrace=False)
    assert tally.requests >= examples(round(MIN_REQUESTS * server.share)), tally.requests
    # Deep enough: predictions and feedback answered, reloads done, refusals from past the schema.
    assert tally.answers[("/v1/predict", 200)] >= examples(round(20 * server.share)), tally.answers
    assert tally.answers[("/v1/feedback", 200)] >= 1, tally.answers
    assert tally.answers[("/v1/models/reload", 200)] >= 1, tally.answers
    deep = ["invalid_request", "unknown_model", "unknown_prediction", "body_too_large"]
    if examples(round(MIN_REQUESTS * server.share)) >= MIN_REQUESTS:
        deep.append("invalid_text")  # a few per cent of the predict requests: asserted on the whole plan only
    for code in deep:
        assert tally.errors[code] >= 1, (code, tally.errors)
