"""Property-based fuzzing of the HTTP API: Schemathesis drives the ASGI app in-process.

Every operation of the published OpenAPI schema is called with generated headers and bodies: valid by
the schema, and Schemathesis' negative ones (wrong types, missing or extra fields, bytes that are not
JSON), with the right token, without one and with a wrong one. Every answer must

* never be a 5xx: bad input is the client's fault, and only a real internal failure may answer 500;
* conform to the schema: a documented status code, its content type, its headers and its body schema;
* for every 4xx, be the JSON error shape ``{"error", "message", "limit"}``.

Random names almost never hit a served model, so two valid bodies in three are steered deeper: a
served model or cascade, a known head or label, a prediction id answered earlier in the run, and texts
no client should send (lone surrogates, NUL, texts over the limits, emoji, right-to-left, control
characters). A violation is *counted* (and its first examples kept), not raised, so one run fuzzes
every operation and reports every kind of failure: the CI test (``tests/fuzz/test_fuzz_server.py``)
fails on any; ``fanbu bench reliability`` reports the counts over a larger plan.

Needs ``hypothesis`` and ``schemathesis`` (the ``dev`` extra).
"""

from __future__ import annotations

import json
import operator
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

from fanbu.serve.errors import OPENAI_PATHS

POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
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
#: Schemathesis' settings for the app's schema: ``from_asgi(..., config=schema_config())``.
KEEP_FAILURES = 20  # examples of failures kept per run (every one is counted)

# Not served anywhere; NUL is no name a SQL store can be asked for (PostgreSQL refuses it in a parameter).
UNSERVED = ["no-such:v9", "x:v1:v2", "x:v-1", " x", "X", "x\x00", "\ud800", "x" * 300]
ODD_IDS = ["\x00", "a\x00b", "0" * 64, "' OR '1'='1", "%s%s", "../../registry.db", "\ud800", "🔥"]
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


def schema_config() -> schemathesis.Config:
    """Schemathesis' configuration: 413 also counts as rejecting negative data."""
    return schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}})


def texts_strategy(max_text_chars: int) -> st.SearchStrategy[list[str]]:
    """Lists of texts: valid Unicode, any code point, odd ones, about and far over ``max_text_chars``."""
    text = st.one_of(
        st.text(max_size=60),  # valid Unicode: these should be answered
        st.text(max_size=60),
        st.text(max_size=60),
        st.text(ANY_CHAR, max_size=30),
        st.sampled_from(ODD_TEXTS),
        st.sampled_from(["\x00", "a\x00b", "end\x00"]),  # refused at the edge (invalid_text), never logged
        st.builds(operator.mul, st.sampled_from(["x", "é", "👍", "\u202e", "\x00"]),
                  st.integers(int(max_text_chars * 0.95), int(max_text_chars * 1.05) + 1)),
        st.builds(operator.mul, st.sampled_from(["x", "é ", "👍"]), st.integers(max_text_chars, 15 * max_text_chars)),
    )
    return st.lists(text, min_size=1, max_size=4) | st.lists(text, min_size=5, max_size=12)


def wrong_auth(token: str) -> st.SearchStrategy[str]:
    """Authorization headers that must all be refused with 401."""
    return st.one_of(
        st.sampled_from([
            "Bearer wrong-token-0123456789", f"Basic {token}", f"Bearer {token}x", f"Bearer {token[:-1]}",
            token, "Bearer", "Bearer ", "",
        ]),
        st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40).map("Bearer ".__add__),
    )


@dataclass
class Tally:
    """What a run sent and got back; ``failures`` keeps the first :data:`KEEP_FAILURES` in words."""

    requests: int = 0
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    prediction_ids: list[str] = field(default_factory=list)
    responses_5xx: int = 0
    schema_violations: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str, exc: BaseException, status: int | None) -> None:
        if status is not None and status >= 500:
            self.responses_5xx += 1
        else:
            self.schema_violations += 1
        if len(self.failures) < KEEP_FAILURES:
            self.failures.append(f"{what}:\n{''.join(traceback.format_exception_only(exc))}")


@dataclass
class Target:
    """What the server under test serves: names to steer valid bodies towards."""

    token: str
    served: list[str]  # models and cascades the server answers for
    heads: list[str]
    labels: list[str]
    max_text_chars: int


Draw = Callable[[st.SearchStrategy[Any]], Any]


class ApiFuzzer:
    """Fuzz one app's operations; every answer is checked and counted in :attr:`tally`."""

    def __init__(self, schema: Any, target: Target) -> None:
        self.schema = schema
        self.target = target
        self.tally = Tally()
        self._texts = texts_strategy(target.max_text_chars)
        self._wrong = wrong_auth(target.token)
        self._steer: dict[str, Callable[[dict[str, Any], Draw, list[str]], Any]] = {
            "/v1/predict": self._steer_predict,
            "/v1/feedback": self._steer_feedback,
            "/v1/models/reload": self._steer_reload,
        }

    def operations(self) -> set[tuple[str, str]]:
        """``(METHOD, path)`` of every operation the schema publishes."""
        return {(op.ok().method.upper(), op.ok().path) for op in self.schema.get_all_operations()}

    def fuzz(self, method: str, path: str, mode: Any, auth: str, n: int) -> None:
        """Send ``n`` generated requests to one operation; ``auth``: ``token``, ``none`` or ``wrong``."""
        operation = self.schema[path][method]
        tally, token = self.tally, self.target.token
        steer = self._steer.get(path) if mode is POSITIVE and auth == "token" else None
        ids = list(tally.prediction_ids[:50])  # fixed before generating, so that examples replay alike
        protected = path.startswith(PROTECTED)
        what = f"{method} {path}, {mode.value} data, {AUTH[auth]}"

        @settings(max_examples=max(1, n), deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        def run(case: Any, data: st.DataObject) -> None:
            steerable = steer is not None and (case.body is None or isinstance(case.body, dict))
            if steerable and data.draw(st.sampled_from([True, True, False]), label="steer"):
                case.body = _as_sent(steer(dict(case.body or {}), data.draw, ids))
            if auth == "token":
                headers = {"Authorization": f"Bearer {token}"}
            else:
                case.headers.pop("Authorization", None)
                headers = {} if auth == "none" else {"Authorization": data.draw(self._wrong, label="auth")}
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # noqa: BLE001 - the app raised instead of answering: a 5xx
                tally.requests += 1
                tally.fail(what, exc, 500)
                return
            tally.requests += 1
            status = response.status_code
            tally.answers[(path, status)] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
                if auth != "token" and protected:
                    assert status == 401, f"{status} without the right token: {response.text[:200]}"
                if 400 <= status < 500:
                    tally.errors[_check_error_shape(response, path)["error"]] += 1
                elif path == "/v1/predict" and status == 200:
                    tally.prediction_ids.extend(p["id"] for p in response.json()["predictions"])
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - counted, the search goes on
                tally.fail(f"{what}, answered {status}", exc, status)

        run()

    # -------------------------------------------------------------------------------- steering

    def _steer_predict(self, body: dict[str, Any], draw: Draw, ids: list[str]) -> dict[str, Any]:
        served = self.target.served
        body["model"] = draw(st.sampled_from([*served, *served, *UNSERVED, body.get("model")]))
        if draw(st.sampled_from(["fuzzed", "kept"])) == "fuzzed":
            body["texts"] = draw(self._texts)
        head = draw(st.sampled_from(["none", "known", "kept"]))
        if head == "none":
            body.pop("head", None)
        elif head == "known":
            body["head"] = draw(st.sampled_from([*self.target.heads, "", "\x00", "Topic"]))
        return body

    def _steer_feedback(self, body: dict[str, Any], draw: Draw, ids: list[str]) -> dict[str, Any]:
        body["prediction_id"] = draw(st.sampled_from([*ids[:20], *ODD_IDS, body.get("prediction_id")]))
        label = draw(st.sampled_from(["none", "known", "kept"]))
        if label == "none":
            body.pop("label", None)
        elif label == "known":
            body["label"] = draw(st.sampled_from([*self.target.labels, "", "x\x00", "SCI"]))
        rating = draw(st.sampled_from(["none", "known", "kept"]))
        if rating == "none":
            body.pop("rating", None)
        elif rating == "known":
            body["rating"] = draw(st.integers(1, 5))
        return body

    def _steer_reload(self, body: dict[str, Any], draw: Draw, ids: list[str]) -> Any:
        return draw(st.sampled_from([{}, {"model": draw(st.sampled_from([*self.target.served, *UNSERVED]))}, body]))


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


def _header(response: Any, name: str) -> str:
    """One header of a Schemathesis response (its keys are lower case, its values lists)."""
    return ",".join(response.headers.get(name, []))


def _check_error_shape(response: Any, path: str) -> dict[str, Any]:
    """A 4xx is ``{"error": code, "message": text, "limit": name or null}``, as JSON, and nothing else; on
    the OpenAI-compatible routes the same fields in OpenAI's shape, ``{"error": {message, type, param, code}}``
    (returned in fanbu's shape, for the tally)."""
    assert _header(response, "content-type").startswith("application/json"), response.headers
    body = response.json()
    if path in OPENAI_PATHS:
        assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict), body
        inner = body["error"]
        assert set(inner) == {"message", "type", "param", "code"}, body
        assert inner["type"] == "invalid_request_error", body
        body = {"error": inner["code"], "message": inner["message"], "limit": inner["param"]}
    assert isinstance(body, dict) and set(body) <= {"error", "message", "limit"}, body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert body.get("limit") is None or isinstance(body["limit"], str), body
    if response.status_code == 401:
        assert _header(response, "www-authenticate") == "Bearer", response.headers
    if response.status_code in (429, 503):
        assert _header(response, "retry-after").isdigit(), response.headers
    return body


#: (method, path, examples with the token: positive, negative; without a token and with a wrong one: each)
PLAN = [
    ("GET", "/health", 3, 0, 3),
    ("GET", "/metrics", 3, 10, 10),
    ("GET", "/v1/models", 3, 10, 10),
    ("POST", "/v1/predict", 320, 120, 50),
    ("POST", "/v1/feedback", 160, 80, 40),
    ("POST", "/v1/models/reload", 50, 40, 20),
    ("POST", "/v1/generate", 60, 40, 15),
    ("POST", "/v1/completions", 60, 40, 15),
    ("POST", "/v1/chat/completions", 60, 40, 15),
]


def run_plan(fuzzer: ApiFuzzer, scale: float = 1.0) -> Tally:
    """Every operation of :data:`PLAN`, its counts times ``scale``: with the token (valid and negative
    data), without one and with a wrong one."""
    missing = fuzzer.operations() ^ {(method, path) for method, path, *_ in PLAN}
    if missing:
        raise ValueError(f"the fuzz plan and the schema's operations differ: {sorted(missing)}")
    for method, path, positive, negative, unauthorised in PLAN:
        fuzzer.fuzz(method, path, POSITIVE, "token", round(positive * scale))
        if negative:
            fuzzer.fuzz(method, path, NEGATIVE, "token", round(negative * scale))
        for auth in ("none", "wrong"):
            fuzzer.fuzz(method, path, POSITIVE, auth, round(unauthorised * scale))
            if negative:
                fuzzer.fuzz(method, path, NEGATIVE, auth, round(unauthorised * scale))
    return fuzzer.tally
