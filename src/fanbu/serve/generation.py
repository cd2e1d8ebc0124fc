"""Generation endpoints: ``/v1/generate`` (fanbu's schema), ``/v1/completions`` and ``/v1/chat/completions``
(OpenAI's), each answered whole or streamed as server-sent events.

A stream is OpenAI's: ``data: {chunk}`` events, each a JSON object with the next piece of text, then
one with the ``finish_reason``, then ``data: [DONE]``. Every request is checked before its response
starts (limits, the model's context length, the queue), so a refusal is a plain JSON error with its
status code; a failure after the stream began (the log store gone) is sent as a last ``data:`` event
``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter
from starlette.responses import StreamingResponse

from fanbu.serve.errors import ApiError, ErrorResponses, OpenAIErrorResponses
from fanbu.serve.lm_state import Job, LMService, Result
from fanbu.serve.openai_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    GenerateRequest,
    GenerateResponse,
    Usage,
)
from fanbu.serve.texts import check_texts

log = logging.getLogger("fanbu.serve")
SSE = "text/event-stream"
_STREAM_DOC = {
    200: {"content": {SSE: {"schema": {"type": "string"}}}, "description": "JSON, or SSE if stream"}
}


def _event(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)}\n\n"


def _usage(result: Result) -> Usage:
    final = result.final
    prompt, completion = len(final.prompt.ids), len(final.output.token_ids)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _extras(result: Result) -> dict[str, Any]:
    return {"escalated": len(result.answers) > 1, "mean_logprob": result.final.output.mean_logprob}


async def _stream(
    service: LMService,
    job: Job,
    piece: Callable[[str, str], dict[str, Any]],
    last: Callable[[str, Result], list[dict[str, Any]]],
) -> StreamingResponse:
    """Start ``job`` now (admitted) and stream it: ``piece(id, text)`` per delta, ``last(id, result)`` at the end."""
    service.admit(job)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    cancelled = threading.Event()
    task = asyncio.create_task(
        service.run(job, lambda text: loop.call_soon_threadsafe(queue.put_nowait, text), cancelled)
    )
    task.add_done_callback(lambda _: queue.put_nowait(None))

    async def events() -> AsyncIterator[str]:
        try:
            while (text := await queue.get()) is not None:
                yield _event(piece(job.id, text))
            try:
                result = task.result()
            except ApiError as exc:
                yield _event({"error": {"code": exc.code, "message": exc.message}})
                return
            except Exception:
                log.exception("generation %s failed while streaming", job.id)
                yield _event({"error": {"code": "internal_error", "message": "see the server log"}})
                return
            for body in last(job.id, result):
                yield _event(body)
            yield _event("[DONE]")
        finally:
            cancelled.set()

    return StreamingResponse(events(), media_type=SSE, headers={"Cache-Control": "no-cache"})


def generation_router(service: LMService, secured: list[Any]) -> APIRouter:
    """The generation routes over ``service`` (``secured``: the token's OpenAPI dependency, if any)."""
    router = APIRouter(dependencies=secured, responses={**ErrorResponses, **_STREAM_DOC})
    limits = service.config.limits

    @router.post("/v1/generate", response_model=GenerateResponse, summary="Complete a prompt (fanbu schema)")
    async def generate(body: GenerateRequest) -> Any:
        check_texts([body.prompt], limits)
        job = await service.prepare(body.model, "generate", body, body.prompt)
        if body.stream:
            return await _stream(
                service,
                job,
                lambda _, text: {"text": text},
                lambda _, r: [{**_generate(r).model_dump(), "text": ""}],
            )
        service.admit(job)
        return _generate(await service.run(job))

    @router.post(
        "/v1/completions",
        response_model=CompletionResponse,
        summary="OpenAI-compatible completions",
        responses={**OpenAIErrorResponses, **_STREAM_DOC},
    )
    async def completions(body: CompletionRequest) -> Any:
        check_texts([body.prompt], limits)
        job = await service.prepare(body.model, "completions", body, body.prompt)
        created, model = int(time.time()), job.route.name

        def chunk(cid: str, text: str, finish: str | None = None) -> dict[str, Any]:
            choice = CompletionChoice(text=text, finish_reason=finish)
            return CompletionResponse(id=cid, created=created, model=model, choices=[choice]).model_dump()

        def ending(cid: str, r: Result) -> list[dict[str, Any]]:
            end = {
                **chunk(f"cmpl-{cid}", "", r.final.output.finish_reason),
                **_extras(r),
            }
            usage = body.stream_options is not None and body.stream_options.include_usage
            return [{**end, "usage": _usage(r).model_dump()} if usage else end]

        if body.stream:
            return await _stream(service, job, lambda cid, text: chunk(f"cmpl-{cid}", text), ending)
        service.admit(job)
        r = await service.run(job)
        choice = CompletionChoice(text=r.final.output.text, finish_reason=r.final.output.finish_reason)
        return CompletionResponse(
            id=f"cmpl-{r.id}",
            created=created,
            model=r.final.served.record.id,
            choices=[choice],
            usage=_usage(r),
            **_extras(r),
        )

    @router.post(
        "/v1/chat/completions",
        response_model=ChatResponse,
        summary="OpenAI-compatible chat",
        responses={**OpenAIErrorResponses, **_STREAM_DOC},
    )
    async def chat(body: ChatRequest) -> Any:
        check_texts([m.content for m in body.messages], limits)
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        job = await service.prepare(body.model, "chat", body, None, messages, body.max_completion_tokens)
        created, model = int(time.time()), job.route.name

        def chunk(
            cid: str, text: str | None, finish: str | None = None, role: bool = False
        ) -> dict[str, Any]:
            delta = {"role": "assistant"} if role else {}
            choice = {
                "index": 0,
                "delta": {**delta, **({"content": text} if text is not None else {})},
                "logprobs": None,
                "finish_reason": finish,
            }
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }

        def ending(cid: str, r: Result) -> list[dict[str, Any]]:
            end = {
                **chunk(f"chatcmpl-{cid}", None, r.final.output.finish_reason),
                **_extras(r),
            }
            usage = body.stream_options is not None and body.stream_options.include_usage
            return [{**end, "usage": _usage(r).model_dump()} if usage else end]

        if body.stream:
            return await _stream(
                service, job, lambda cid, text: chunk(f"chatcmpl-{cid}", text, role=True), ending
            )
        service.admit(job)
        r = await service.run(job)
        choice = ChatChoice(
            message=AssistantMessage(content=r.final.output.text), finish_reason=r.final.output.finish_reason
        )
        return ChatResponse(
            id=f"chatcmpl-{r.id}",
            created=created,
            model=r.final.served.record.id,
            choices=[choice],
            usage=_usage(r),
            **_extras(r),
        )

    return router


def _generate(r: Result) -> GenerateResponse:
    final = r.final
    return GenerateResponse(
        id=r.id,
        model=final.served.record.id,
        text=final.output.text,
        finish_reason=final.output.finish_reason,
        mean_logprob=final.output.mean_logprob,
        escalated=len(r.answers) > 1,
        usage=_usage(r),
    )
