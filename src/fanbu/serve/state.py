"""What a running server holds: models, routes (models and cascades), batchers, store and metrics."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from fanbu.collect.store import LogStore, Prediction
from fanbu.registry import Registry
from fanbu.registry.workspace import UnknownModelError
from fanbu.serve.batcher import MicroBatcher
from fanbu.serve.cascade import Route, tune_threshold
from fanbu.serve.config import ServeConfig
from fanbu.serve.errors import ApiError
from fanbu.serve.metrics import Metrics
from fanbu.serve.models import ModelPool, NotServableError, read_labels

log = logging.getLogger("fanbu.serve")


@dataclass
class ServerState:
    """Everything the endpoints share."""

    config: ServeConfig
    registry: Registry
    store: LogStore
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.pool = ModelPool(self.registry, self.config.runtime, self.config.threads)
        self.routes: dict[str, Route] = {}
        self.batchers: dict[tuple[str, str], MicroBatcher[Prediction]] = {}
        self._route_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------ start, stop

    def start(self) -> None:
        """Load the listed models and cascades, tuning cascade thresholds from the logs (blocking)."""
        for ref in self.config.models:
            self.routes[ref] = Route(ref, self.pool.get(ref))
        for name, cascade in self.config.cascades.items():
            route = Route(name, self.pool.get(cascade.small), self.pool.get(cascade.large), cascade.threshold)
            if cascade.target_escalation_rate is not None:
                confidences = [
                    c for head in route.labels for c in self.store.confidences(route.small.record.id, head)
                ]
                if len(confidences) >= cascade.min_samples:
                    route.threshold = tune_threshold(confidences, cascade.target_escalation_rate)
                    log.warning(
                        "cascade %s: threshold %.4f tuned on %d logged texts for a %.2f escalation rate",
                        name,
                        route.threshold,
                        len(confidences),
                        cascade.target_escalation_rate,
                    )
            self.routes[name] = route

    async def stop(self) -> None:
        """Stop every batcher."""
        for batcher in self.batchers.values():
            await batcher.close()

    # ---------------------------------------------------------------------------------- lookups

    async def route(self, name: str) -> Route:
        """The route a client named: a listed model or cascade, else any registered classifier."""
        route = self.routes.get(name)
        if route is not None:
            return route
        if self.config.only_listed:
            raise ApiError(
                404,
                "unknown_model",
                f"model {name!r} is not served here (served: {', '.join(sorted(self.routes)) or 'none'})",
            )
        async with self._route_lock:
            if name not in self.routes:
                try:
                    served = await asyncio.to_thread(self.pool.get, name)
                except UnknownModelError as exc:
                    raise ApiError(404, "unknown_model", str(exc)) from None
                except NotServableError as exc:
                    raise ApiError(422, "model_not_servable", str(exc)) from None
                self.routes[name] = Route(name, served)
        return self.routes[name]

    def head_of(self, route: Route, head: str | None) -> str:
        """The head a request means: the given one, or the model's only head."""
        if head is None:
            if len(route.labels) == 1:
                return next(iter(route.labels))
            raise ApiError(
                422,
                "head_required",
                f"model {route.name!r} has heads {sorted(route.labels)}: "
                "name one in the request's 'head' field",
            )
        if head not in route.labels:
            raise ApiError(
                422,
                "unknown_head",
                f"model {route.name!r} has no head {head!r}; heads: {', '.join(sorted(route.labels))}",
            )
        return head

    def labels_of(self, model_id: str, head: str) -> list[str]:
        """Label names of ``model_id``'s head (blocking: may read the registry)."""
        for route in self.routes.values():
            for served in (route.small, route.large):
                if served is not None and served.record.id == model_id:
                    return served.labels[head]
        return read_labels(self.registry.get_model(model_id))[head]

    def batcher(self, route: Route, head: str) -> MicroBatcher[Prediction]:
        """The micro-batcher of ``(route, head)``, created on first use."""
        key = (route.name, head)
        if key not in self.batchers:
            limits, batching = self.config.limits, self.config.batching
            self.batchers[key] = MicroBatcher(
                lambda texts: route.answer(texts, head, self.config.privacy, batching.max_batch),
                max_batch=batching.max_batch,
                max_wait_s=batching.max_wait_ms / 1000.0,
                max_queue=limits.max_queue,
                on_batch=self.metrics.batch_size.labels(route.name).observe,
                commit=lambda predictions: self._log(route, predictions),
                workers=batching.workers,
            )
        return self.batchers[key]

    def _log(self, route: Route, predictions: list[Prediction]) -> None:
        """Runs in the commit thread: log answered batches in one transaction, then count them."""
        self.store.log_batch(predictions)
        escalated = sum(p.escalated for p in predictions)
        if escalated:
            self.metrics.escalations.labels(route.name).inc(escalated)
        for prediction in predictions:
            self.metrics.predictions.labels(prediction.final.model_id).inc()
