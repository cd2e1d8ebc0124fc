"""The ASGI gate in front of the app: token check, JSON bodies only, size cap, request metrics.

In order: ``/v1/*`` and ``/metrics`` need the bearer token (401); a POST whose content type is not
``application/json`` is refused with 415 before its body is read, so nothing is ever unpickled; a body
over ``max_body_bytes`` (by ``Content-Length`` or while streaming) gets 413. A POST with no content type
and no body passes (a route whose body is optional, such as ``/v1/models/reload``, then gets none); with
a body, it gets the 415.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fanbu.serve.errors import OPENAI_PATHS, ApiError, too_large
from fanbu.serve.metrics import Metrics
from fanbu.serve.security import check_bearer

JSON_TYPE = b"application/json"
PROTECTED = ("/v1/", "/metrics")
KNOWN_PATHS = (
    "/v1/predict",
    "/v1/feedback",
    "/v1/generate",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/models/reload",
    "/health",
    "/metrics",
    "/openapi.json",
    "/docs",
)


class Gate:
    """Wraps an ASGI app with authentication, body checks and request metrics.

    Args:
        app: The FastAPI app.
        token_hash: sha256 of the accepted token, or ``None`` when authentication is off.
        max_body_bytes: The largest body accepted.
        metrics: Where request counts, latencies and refusals go.
    """

    def __init__(self, app: ASGIApp, token_hash: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.token_hash = token_hash
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS else "other"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        if self.token_hash is not None and scope["path"].startswith(PROTECTED):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if not check_bearer(auth, self.token_hash):
                error = ApiError(
                    401,
                    "unauthorized",
                    "missing or wrong API token: send the header "
                    "'Authorization: Bearer <token>' (the token shown at the server's first "
                    "start, or FANBU_SERVE_TOKEN)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await self._reject(error, scope, receive, send)
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type and content_type != JSON_TYPE:
            await self._reject(_unsupported(content_type), scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject(too_large(int(declared), self.max_body_bytes), scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > self.max_body_bytes:
                await self._reject(too_large(len(body), self.max_body_bytes), scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        if body and content_type != JSON_TYPE:
            await self._reject(_unsupported(content_type), scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _reject(self, error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.rejected.labels(error.code).inc()
        await error.response(scope.get("path") in OPENAI_PATHS)(scope, receive, send)  # OpenAI clients: their shape


def _unsupported(content_type: bytes) -> ApiError:
    """415 for a body that is not declared JSON."""
    shown = content_type.decode("latin-1") or "none"
    return ApiError(
        415,
        "unsupported_media_type",
        f"content type {shown!r} is not accepted: send a JSON body with 'Content-Type: application/json'",
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
