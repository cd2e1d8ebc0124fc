"""The FastAPI app: predict, feedback, reload, health, metrics; behind the :class:`~fanbu.serve.auth.Gate`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

import fanbu
from fanbu.collect.store import LogStore, LogStoreError, UnknownPredictionError
from fanbu.registry import Registry
from fanbu.serve.auth import Gate
from fanbu.serve.batcher import Overloaded
from fanbu.serve.config import ServeConfig
from fanbu.serve.errors import (
    ApiError,
    AuthErrorResponses,
    ErrorResponses,
    on_api_error,
    on_http_error,
    on_unexpected_error,
    on_validation_error,
)
from fanbu.serve.generation import generation_router
from fanbu.serve.lm_feedback import record_generation_feedback
from fanbu.serve.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    GenerationFeedbackResponse,
    HealthResponse,
    LMRouteOut,
    ModelsResponse,
    PredictionOut,
    PredictRequest,
    PredictResponse,
    ReloadRequest,
    ReloadResponse,
    RouteOut,
)
from fanbu.serve.state import ServerState
from fanbu.serve.texts import check_texts

_BEARER = Depends(
    HTTPBearer(auto_error=False, description="The API token (checked before the request is read).")
)


def create_app(config: ServeConfig, registry: Registry, store: LogStore, token_hash: str | None) -> FastAPI:
    """Build the app. ``token_hash`` is the sha256 of the accepted token (``None``: auth is off)."""
    if config.auth and token_hash is None:
        raise ValueError("auth is on but no token hash was given; use fanbu.serve.security.resolve_token")
    state = ServerState(config, registry, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.start)
        state.start_watch()
        yield
        await state.stop()

    app = FastAPI(
        title="fanbu serve",
        version=fanbu.__version__,
        lifespan=lifespan,
        description="Small domain models, an edge-to-large cascade, and a log of what they meet.",
    )
    app.state.serve = state
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_middleware(
        Gate,
        token_hash=token_hash if config.auth else None,
        max_body_bytes=config.limits.max_body_bytes,
        metrics=state.metrics,
    )
    secured: list[Any] = [] if not config.auth else [_security_dependency()]

    @app.get("/health", response_model=HealthResponse, summary="Liveness: no token needed")
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", version=fanbu.__version__)

    @app.get(
        "/metrics",
        summary="Prometheus text format",
        dependencies=secured,
        response_class=Response,
        responses={
            200: {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **AuthErrorResponses,
        },
    )
    async def metrics() -> Response:
        for (target, _), batcher in state.batchers.items():
            state.metrics.queue_depth.labels(target).set(batcher.depth())
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get(
        "/v1/models",
        response_model=ModelsResponse,
        summary="Served models and cascades",
        dependencies=secured,
        responses=AuthErrorResponses,
    )
    async def models() -> ModelsResponse:
        return ModelsResponse(
            routes={
                name: RouteOut(
                    model=r.small.record.id,
                    large=r.large.record.id if r.large else None,
                    threshold=r.threshold if r.large else None,
                    heads=r.labels,
                )
                for name, r in sorted(state.routes.items())
            },
            lm_routes={
                name: LMRouteOut(
                    model=r.small.record.id,
                    large=r.large.record.id if r.large else None,
                    threshold=r.threshold if r.large else None,
                    context_length=min(m.context_length for m in r.models),
                    runtime=r.small.runtime,
                    large_runtime=r.large.runtime if r.large else None,
                )
                for name, r in sorted(state.lm.routes.items())
            },
        )

    @app.post(
        "/v1/models/reload",
        response_model=ReloadResponse,
        dependencies=secured,
        responses=ErrorResponses,
        summary="Swap served models to their newest registered versions, losing no request",
    )
    async def reload(body: ReloadRequest | None = None) -> ReloadResponse:
        """Re-resolve a served model (or all): new versions load off the request path, then swap.

        Requests already queued finish on the old version; later ones get the new one. A new version
        that fails to load leaves the old one serving and answers 422 ``reload_failed``.
        """
        return await state.reload(body.model if body is not None else None)

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=secured, responses=ErrorResponses)
    async def predict(body: PredictRequest) -> PredictResponse:
        limits = config.limits
        check_texts(body.texts, limits)
        route = await state.route(body.model)
        head = state.head_of(route, body.head)
        try:
            predictions = await state.batcher(route, head).submit(body.texts)
        except LogStoreError as exc:
            raise ApiError(
                503,
                "store_unavailable",
                f"the prediction could not be logged, so it is not answered: {exc}",
                headers={"Retry-After": str(limits.retry_after_s)},
            ) from None
        except Overloaded:
            state.metrics.rejected.labels("overloaded").inc()
            raise ApiError(
                429,
                "overloaded",
                f"model {body.model!r} has {limits.max_queue} requests waiting "
                f"(limits.max_queue); retry after {limits.retry_after_s} s",
                "max_queue",
                headers={"Retry-After": str(limits.retry_after_s)},
            ) from None
        labels = route.labels[head]
        return PredictResponse(
            model=body.model,
            head=head,
            predictions=[
                PredictionOut(
                    id=p.id,
                    label=p.final.label,
                    confidence=p.final.confidence,
                    probabilities=dict(zip(labels, p.final.probabilities, strict=True)),
                    model=p.final.model_id,
                    escalated=p.escalated,
                )
                for p in predictions
            ],
        )

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse | GenerationFeedbackResponse,
        dependencies=secured,
        responses=ErrorResponses,
    )
    async def feedback(body: FeedbackRequest) -> FeedbackResponse | GenerationFeedbackResponse:
        """A label and/or rating for a prediction; a rating and/or corrected completion for a generation."""
        answer = await record_generation_feedback(state.store, config, body)
        if answer is not None:
            state.metrics.feedback.inc()
            return answer
        if body.completion is not None:
            raise ApiError(
                422,
                "completion_on_prediction",
                f"{body.prediction_id!r} is not a generation: a prediction takes a corrected label "
                "and/or a rating, not a completion",
            )
        try:
            model_id, head = await asyncio.to_thread(state.store.prediction_head, body.prediction_id)
        except UnknownPredictionError as exc:
            raise ApiError(404, "unknown_prediction", str(exc)) from None
        if body.label is not None:
            labels = await asyncio.to_thread(state.labels_of, model_id, head)
            if body.label not in labels:
                raise ApiError(
                    422,
                    "unknown_label",
                    f"label {body.label!r} is not one of head {head!r}'s labels: {', '.join(labels)}",
                )
        await asyncio.to_thread(state.store.add_feedback, body.prediction_id, body.label, body.rating)
        state.metrics.feedback.inc()
        return FeedbackResponse(prediction_id=body.prediction_id, label=body.label, rating=body.rating)

    app.include_router(generation_router(state.lm, secured))
    return app


async def _documented(request: Request, credentials: Any = _BEARER) -> None:
    """The gate has already checked the token; this only documents it in the OpenAPI schema."""


def _security_dependency() -> Any:
    return Depends(_documented)
