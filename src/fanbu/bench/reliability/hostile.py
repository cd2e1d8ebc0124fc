"""Requests a hostile or careless client sends, as raw bytes, and a client that sends them.

Each case is one ``POST`` body that the server must refuse with a 4xx (never a 5xx, never by failing
someone else's request). The first is the reported bug: valid JSON whose text is a lone surrogate.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Sent:
    """One answered request: what it was, its status (0: no answer) and its latency."""

    kind: str
    status: int
    seconds: float
    body: bytes = b""


def hostile_bodies(model: str, max_text_chars: int) -> dict[str, bytes]:
    """Bad ``/v1/predict`` bodies by kind (each must get a 4xx)."""
    quoted = json.dumps(model)
    return {
        "lone_surrogate": b'{"model": ' + quoted.encode() + rb', "texts": ["a\ud800b"]}',
        "lone_low_surrogate": b'{"model": ' + quoted.encode() + rb', "texts": ["ok", "\udfff"]}',
        "nul": b'{"model": ' + quoted.encode() + rb', "texts": ["x\u0000y"]}',
        "too_long": json.dumps({"model": model, "texts": ["y" * (max_text_chars + 1)]}).encode(),
        "malformed_json": b'{"model": ' + quoted.encode() + b', "texts": [',
        "texts_not_a_list": json.dumps({"model": model, "texts": "one string"}).encode(),
        "text_not_a_string": json.dumps({"model": model, "texts": ["a", 3]}).encode(),
        "empty_texts": json.dumps({"model": model, "texts": []}).encode(),
        "unknown_model": json.dumps({"model": "no-such-model", "texts": ["a"]}).encode(),
        "unknown_head": json.dumps({"model": model, "texts": ["a"], "head": "no-such-head"}).encode(),
        "extra_field": json.dumps({"model": model, "texts": ["a"], "__class__": "x"}).encode(),
        "not_an_object": b"[1, 2, 3]",
        "invalid_utf8": b'{"model": ' + quoted.encode() + b', "texts": ["\xff\xfe"]}',
    }


class Client:
    """One kept-alive connection to the server (the standard library's: cheap on a small machine)."""

    def __init__(self, url: str, token: str, timeout_s: float = 120.0) -> None:
        target = urlsplit(url)
        self._address = (target.hostname or "127.0.0.1", target.port)
        self._timeout = timeout_s
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, kind: str) -> Sent:
        """POST ``body``; a transport error is answered as status 0 (and the connection is dropped)."""
        started = time.perf_counter()
        try:
            if self._connection is None:
                self._connection = http.client.HTTPConnection(*self._address, timeout=self._timeout)
            self._connection.request("POST", path, body=body, headers=self._headers)
            response = self._connection.getresponse()
            payload = response.read()
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return Sent(kind, response.status, time.perf_counter() - started, payload)
        except (OSError, http.client.HTTPException):
            self.close()
            return Sent(kind, 0, time.perf_counter() - started)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
