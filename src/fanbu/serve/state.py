"""What a running server holds: models, routes (models and cascades), batchers, store and metrics.

A route and its batchers are never changed in place. A reload (:meth:`ServerState.reload`) builds new
routes on the new versions beside the old ones, then swaps them in one step on the event loop: a
request picks its route and queues in that route's batcher with no ``await`` in between, so every
request is either queued on the old route before the swap or finds the new one after it. The old
routes' batchers are then drained (every request they hold is answered, on the old model) and
stopped, and the old versions released. Served causal LMs are re-resolved by the same reload, loaded in
the same worker thread and swapped in the same step; generations already running on an old LM version,
streams included, finish on it (see :mod:`fanbu.serve.lm_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from fanbu.collect.store import LogStore, Prediction
from fanbu.registry import Registry
from fanbu.registry.workspace import UnknownModelError
from fanbu.serve.batcher import MicroBatcher
from fanbu.serve.cascade import Route, tune_threshold
from fanbu.serve.config import ServeConfig
from fanbu.serve.errors import ApiError
from fanbu.serve.lm_models import ServedLM
from fanbu.serve.lm_reload import LMPlan, lm_route_refs, plan_lm_reload
from fanbu.serve.lm_state import LMService
from fanbu.serve.metrics import Metrics
from fanbu.serve.models import ModelPool, NotServableError, Served, read_labels
from fanbu.serve.reload import Plan, ReloadError, plan_reload, route_refs, served_refs, watch
from fanbu.serve.schemas import ModelChange, ReloadResponse

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
        self._route_lock = asyncio.Lock()  # held while a route is added or a reload plans and swaps
        self._watch: asyncio.Task[None] | None = None
        self.lm = LMService(self.config, self.registry, self.store, self.metrics)

    # ------------------------------------------------------------------------------ start, stop

    def start(self) -> None:
        """Load the listed models and cascades, tuning cascade thresholds from the logs (blocking).

        Listed causal LMs and the LM cascades go to :attr:`lm` (the generation endpoints' routes).
        """
        lm_refs = [ref for ref in self.config.models if self.lm.pool.is_lm(ref)]
        self.lm.start(lm_refs)
        for ref in self.config.models:
            if ref not in lm_refs:
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

    def start_watch(self) -> None:
        """Start the registry watch if ``watch_seconds`` is set (call on the event loop, after start)."""
        if self.config.watch_seconds is None or self._watch is not None:
            return
        self._watch = asyncio.create_task(
            watch(
                self.config.watch_seconds,
                lambda: {**self.lm.serving(), **served_refs(self.routes, self.config.cascades)},
                self.pool.workspace.resolve,
                self.reload,
            ),
            name="fanbu-registry-watch",
        )

    async def stop(self) -> None:
        """Stop the registry watch and every batcher."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for batcher in self.batchers.values():
            await batcher.close()

    # ----------------------------------------------------------------------------------- reload

    async def reload(self, target: str | None = None) -> ReloadResponse:
        """Swap served references, causal LMs included, to the versions they resolve to now (all, or ``target``'s).

        New versions load and warm up in a worker thread while the old ones answer. If every one
        loaded, the routes that use them are swapped at once; the old routes' batchers are drained,
        the old LM routes' generations finish, and the old versions are released before this returns.
        If one failed, nothing is swapped.

        Raises:
            ApiError: 404 if ``target`` is neither a served reference nor a route; 422 if a new
                version could not be served (the message says which, why and what to do).
        """
        async with self._route_lock:
            serving = served_refs(self.routes, self.config.cascades)
            refs, lm_refs = self._reload_targets(target, serving, self.lm.serving())
            routes, lm_routes = dict(self.routes), dict(self.lm.routes)

            def plan_both() -> tuple[Plan, LMPlan]:
                return (
                    plan_reload(self.pool, routes, self.config.cascades, refs),
                    plan_lm_reload(self.lm.pool, lm_routes, self.config.lm_cascades, lm_refs),
                )

            try:
                plan, lm_plan = await asyncio.to_thread(plan_both)
            except ReloadError as exc:
                self.metrics.reloads.labels("failed").inc()
                raise ApiError(422, "reload_failed", str(exc)) from None
            for change in plan.changes:  # from here to the last route, no await: one step for requests
                self.pool.pin(change.ref, change.new)
            self.routes.update(plan.routes)
            retired = [b for (name, _), b in self.batchers.items() if name in plan.routes]
            self.batchers = {k: b for k, b in self.batchers.items() if k[0] not in plan.routes}
            lm_retired = self.lm.swap(lm_plan)
        *drained, lm_drained = await asyncio.gather(
            *(batcher.drain() for batcher in retired), self.lm.drain(lm_retired)
        )
        if not all(drained):
            log.warning("reload: an old batcher did not drain in time; its last requests were cancelled")
        if not lm_drained:
            log.warning("reload: generations on an old LM version still run; it is freed when they end")
        released = {c.old.record.id for c in plan.changes if self.pool.release(c.old.record.id)}
        released |= {c.old.record.id for c in lm_plan.changes if self.lm.pool.release(c.old.record.id)}
        changes = [*plan.changes, *lm_plan.changes]
        self.metrics.reloads.labels("changed").inc(len(changes))
        self.metrics.reloads.labels("unchanged").inc(len(plan.unchanged) + len(lm_plan.unchanged))
        return ReloadResponse(
            changed=[ModelChange(ref=c.ref, old=c.old.record.id, new=c.new.record.id) for c in changes],
            unchanged={**plan.unchanged, **lm_plan.unchanged},
            routes=sorted({*plan.routes, *lm_plan.routes}),
            released=sorted(released),
        )

    def _reload_targets(
        self, target: str | None, serving: dict[str, Served], lm_serving: dict[str, ServedLM]
    ) -> tuple[dict[str, Served], dict[str, ServedLM]]:
        """The served classifier and LM references a reload of ``target`` (``None``: all) re-resolves."""
        if target is None:
            return serving, lm_serving
        if target in self.routes:
            refs = route_refs(target, self.config.cascades)
            return {ref: serving[ref] for ref in refs if ref is not None}, {}
        if target in self.lm.routes:
            refs = lm_route_refs(target, self.config.lm_cascades)
            return {}, {ref: lm_serving[ref] for ref in refs if ref is not None}
        if target in serving or target in lm_serving:
            return (
                {target: serving[target]} if target in serving else {},
                {target: lm_serving[target]} if target in lm_serving else {},
            )
        served = sorted({*self.routes, *serving, *self.lm.routes, *lm_serving})
        raise ApiError(
            404,
            "unknown_model",
            f"model {target!r} is not served here, so there is nothing to reload (served: "
            f"{', '.join(served) or 'none'}); omit 'model' to reload all",
        )

    # ---------------------------------------------------------------------------------- lookups

    async def route(self, name: str) -> Route:
        """The route a client named: a listed model or cascade, else any registered classifier."""
        route = self.routes.get(name)
        if route is not None:
            return route
        if name in self.lm.routes:
            raise ApiError(
                422,
                "model_not_servable",
                f"model {name!r} is a language model: it does not classify; send it to /v1/generate, "
                "/v1/completions or /v1/chat/completions",
            )
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
