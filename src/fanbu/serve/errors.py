"""Errors the API answers with: a status code and ``{"error": code, "message": ..., "limit": ...}``.

Every refusal says what went wrong and, for a limit, which setting it hit (``limits.<name>``). The
OpenAI-compatible routes (:data:`OPENAI_PATHS`) answer the same errors in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so that OpenAI clients show the message.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        limit: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.limit, self.headers = status, code, message, limit, headers

    def response(self, openai: bool = False) -> JSONResponse:
        """The JSON response for this error (``openai``: in OpenAI's ``{"error": {...}}`` shape)."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.limit is not None:
            body["limit"] = self.limit
        if openai:
            kind = "invalid_request_error" if self.status < 500 else "server_error"
            body = {"error": {"message": self.message, "type": kind, "param": self.limit, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
"""Routes that answer errors in OpenAI's shape, so that OpenAI clients show the message."""


def _openai(request: Request) -> bool:
    return request.url.path in OPENAI_PATHS


def too_large(size: int, limit: int) -> ApiError:
    """413 for a body over ``limits.max_body_bytes``."""
    return ApiError(
        413,
        "body_too_large",
        f"request body is {size} bytes or more; the limit is {limit} "
        "bytes (limits.max_body_bytes): send fewer or shorter texts",
        "max_body_bytes",
    )


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    """Handler for :class:`ApiError`."""
    assert isinstance(exc, ApiError)
    return exc.response(_openai(request))


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable line per problem, e.g. ``texts.2: Input should be a valid string``."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            problems.append(f"body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})")
        else:
            problems.append(f"{_where(tuple(error.get('loc', ())))}: {error.get('msg')}")
    return ApiError(422, "invalid_request", "; ".join(problems) or "invalid request").response(
        _openai(request)
    )


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (404 unknown path, 405 wrong method) in the same JSON shape.

    FastAPI answers 400 when a JSON body cannot be read other than for its syntax: bytes that are not
    UTF-8 (or UTF-16/32) text, an integer of more digits than Python converts, nesting deeper than the
    parser recurses. To a client that is the same mistake as a syntax error, so it gets the same 422.
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        why = _unreadable(exc.__cause__)
        error = ApiError(422, "invalid_request", f"body is not valid JSON ({why}); send UTF-8 JSON")
        return error.response(_openai(request))
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return ApiError(exc.status_code, codes.get(exc.status_code, "http_error"), message).response(
        _openai(request)
    )


def _unreadable(cause: BaseException | None) -> str:
    """Why FastAPI could not read a body as JSON, in a few words."""
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 text: byte 0x{cause.object[cause.start]:02x} at {cause.start}"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if cause is not None and str(cause):
        # e.g. "Exceeds the limit (4300 digits) for integer string conversion", less the Python advice
        return str(cause).splitlines()[0].partition(":")[0]
    return "it could not be read"


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """500 as JSON; the traceback goes to the server's log, not to the client."""
    message = f"{request.method} {request.url.path} failed ({type(exc).__name__}); see the server log"
    return ApiError(500, "internal_error", message).response(_openai(request))


def _error_doc(description: str, headers: dict[str, str] | None = None, openai: bool = False) -> dict[str, Any]:
    """An error response's OpenAPI entry: ``ErrorOut`` (``openai``: ``OpenAIErrorOut``) as JSON, and the
    headers (name -> meaning) it has."""
    from fanbu.serve.schemas import ErrorOut, OpenAIErrorOut

    doc: dict[str, Any] = {"description": description, "model": OpenAIErrorOut if openai else ErrorOut}
    if headers:
        doc["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return doc


_RETRY = {"Retry-After": "Seconds to wait before retrying (limits.retry_after_s)."}
_UNAUTHORIZED = _error_doc("Missing or wrong token.", {"WWW-Authenticate": "Always `Bearer`."})
_INTERNAL = _error_doc("An internal failure, never the client's input: see the server log.")

AuthErrorResponses: dict[int | str, dict[str, Any]] = {401: _UNAUTHORIZED, 500: _INTERNAL}
"""What a route behind the token that reads no body may answer besides 200."""

def _body_errors(openai: bool) -> dict[int | str, dict[str, Any]]:
    return {
        401: _error_doc("Missing or wrong token.", {"WWW-Authenticate": "Always `Bearer`."}, openai),
        404: _error_doc("Unknown model or prediction id.", None, openai),
        413: _error_doc("Body over limits.max_body_bytes.", None, openai),
        415: _error_doc("Not a JSON body.", None, openai),
        422: _error_doc("Invalid request or a limit exceeded (the `limit` field names it).", None, openai),
        429: _error_doc("Queue full: retry after the Retry-After header's seconds.", _RETRY, openai),
        500: _error_doc("An internal failure, never the client's input: see the server log.", None, openai),
        503: _error_doc("The logging store is unavailable: nothing was answered.", _RETRY, openai),
    }


ErrorResponses: dict[int | str, dict[str, Any]] = _body_errors(openai=False)
"""What a route behind the token that reads a JSON body may answer besides 200."""

OpenAIErrorResponses: dict[int | str, dict[str, Any]] = _body_errors(openai=True)
"""The same answers of the OpenAI-compatible routes, in OpenAI's error shape."""
