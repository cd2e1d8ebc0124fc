"""What a server holds for language models: LM routes, their admission limits, running and logging.

A generation runs in a worker thread (the event loop only passes its text on). Each route runs at most
``generation.workers`` generations at once; up to ``limits.max_queue`` more wait their turn, and a
request beyond that is refused with 429 before it starts, so a stream never begins that cannot run.
A completed generation is logged before the client gets its answer (or the end of its stream).

A reload (:meth:`fanbu.serve.state.ServerState.reload`) swaps LM routes as it swaps classification
routes: a request holds the route it was prepared on from :meth:`LMService.prepare` to the end of its
generation, and no ``await`` lies between a route's last check in ``prepare`` and :meth:`LMService.admit`,
so every request is either counted on the old route before :meth:`LMService.swap` or finds the new one
after it. :meth:`LMService.drain` then waits for the old routes' generations, streams included.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fanbu.collect.schema import new_prediction_id
from fanbu.collect.store import LogStore, LogStoreError
from fanbu.registry import Registry
from fanbu.registry.workspace import UnknownModelError
from fanbu.serve.batcher import DRAIN_TIMEOUT_S
from fanbu.serve.config import ServeConfig
from fanbu.serve.errors import ApiError
from fanbu.serve.lm_cascade import Answered, LMRoute, to_generation, tune_threshold
from fanbu.serve.lm_engine import Sampling
from fanbu.serve.lm_models import LMPool, NoRuntimeError, NotAnLMError, Prompt, ServedLM
from fanbu.serve.lm_reload import LMPlan, served_lm_refs
from fanbu.serve.metrics import Metrics
from fanbu.serve.openai_schemas import SamplingFields

log = logging.getLogger("fanbu.serve")

DRAIN_POLL_S = 0.01  # how often drain() looks whether the retired routes' generations have ended


@dataclass(frozen=True)
class Job:
    """A checked request, ready to run: its id, route, one prompt and one sampling per model."""

    id: str
    route: LMRoute
    endpoint: str
    prompts: list[Prompt]
    samplings: list[Sampling]


@dataclass(frozen=True)
class Result:
    """A completed, logged generation."""

    id: str
    answers: list[Answered]

    @property
    def final(self) -> Answered:
        """The answer the client gets."""
        return self.answers[-1]


class LMService:
    """The LM routes of one server and the way a request goes through them."""

    def __init__(self, config: ServeConfig, registry: Registry, store: LogStore, metrics: Metrics) -> None:
        self.config, self.store, self.metrics = config, store, metrics
        self.pool = LMPool(registry, config.generation, config.threads)
        self.routes: dict[str, LMRoute] = {}
        self._running: dict[str, int] = {}  # route name -> generations running or waiting
        self._on_route: dict[int, int] = {}  # id of the LMRoute object -> its generations admitted, not ended
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._lock = threading.Lock()

    def start(self, refs: list[str]) -> None:
        """Load the listed LMs and the LM cascades, tuning thresholds from the logs (blocking)."""
        for ref in refs:
            self.routes[ref] = LMRoute(ref, self.pool.get(ref))
        for name, cascade in self.config.lm_cascades.items():
            route = LMRoute(
                name, self.pool.get(cascade.small), self.pool.get(cascade.large), cascade.threshold
            )
            if cascade.target_escalation_rate is not None:
                seen = self.store.mean_logprobs(route.small.record.id)
                if len(seen) >= cascade.min_samples:
                    route.threshold = tune_threshold(seen, cascade.target_escalation_rate)
                    log.warning(
                        "LM cascade %s: threshold %.4f tuned on %d logged prompts for a %.2f escalation rate",
                        name,
                        route.threshold,
                        len(seen),
                        cascade.target_escalation_rate,
                    )
            self.routes[name] = route

    async def route(self, name: str) -> LMRoute:
        """The LM route a client named: a listed LM or LM cascade, else any registered causal LM."""
        route = self.routes.get(name)
        if route is not None:
            return route
        if name in self.config.cascades:
            raise ApiError(
                422,
                "not_a_language_model",
                f"{name!r} is a classification cascade: send it to /v1/predict, or name a causal LM or an "
                "LM cascade (lm_cascades) here",
            )
        if self.config.only_listed:
            raise ApiError(
                404,
                "unknown_model",
                f"language model {name!r} is not served here "
                f"(served: {', '.join(sorted(self.routes)) or 'none'})",
            )
        try:
            served = await asyncio.to_thread(self.pool.get, name)
        except UnknownModelError as exc:
            raise ApiError(404, "unknown_model", str(exc)) from None
        except NotAnLMError as exc:
            raise ApiError(422, "not_a_language_model", str(exc)) from None
        except NoRuntimeError as exc:
            raise ApiError(422, "runtime_unavailable", str(exc)) from None
        return self.routes.setdefault(name, LMRoute(name, served))

    # ------------------------------------------------------------------------------ reload

    def serving(self) -> dict[str, ServedLM]:
        """Every reference the LM routes generate with -> the LM it generates with now."""
        return served_lm_refs(self.routes, self.config.lm_cascades)

    def swap(self, plan: LMPlan) -> list[LMRoute]:
        """Put ``plan``'s versions and routes in place in one step (no ``await``); the routes retired."""
        for change in plan.changes:
            self.pool.pin(change.ref, change.new)
        retired = [self.routes[name] for name in plan.routes]
        self.routes.update(plan.routes)
        return retired

    async def drain(self, retired: list[LMRoute], timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until the generations admitted on ``retired`` routes have ended; whether within ``timeout_s``.

        Nothing is cancelled: a generation still running at the timeout finishes on its old version,
        which stays in memory until then.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        keys = [id(route) for route in retired]
        while any(self._on_route.get(key, 0) for key in keys):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_S)
        return True

    # ----------------------------------------------------------------------------- requests

    async def prepare(
        self,
        name: str,
        endpoint: str,
        fields: SamplingFields,
        text: str | None,
        messages: list[dict[str, str]] | None = None,
        max_tokens: int | None = None,
    ) -> Job:
        """Check a request against the limits and each model's context; a 422 names what is wrong."""
        limits = self.config.generation
        asked = max_tokens if max_tokens is not None else fields.max_tokens
        if asked is not None and asked > limits.max_tokens:
            raise ApiError(
                422,
                "max_tokens_too_large",
                f"max_tokens is {asked}; the limit is {limits.max_tokens} "
                "(generation.max_tokens): ask for fewer",
                "generation.max_tokens",
            )
        stop = [fields.stop] if isinstance(fields.stop, str) else list(fields.stop or [])
        if len(stop) > limits.max_stop or any(not s for s in stop):
            raise ApiError(
                422,
                "invalid_stop",
                f"stop: give at most {limits.max_stop} non-empty strings "
                f"(generation.max_stop), got {len(stop)}",
                "generation.max_stop",
            )
        route = await self.route(name)

        def ready(route: LMRoute) -> tuple[list[Prompt], list[Sampling]]:
            prompts = [m.prompt(text, messages) for m in route.models]
            budgets = [m.budget(p, asked, limits.default_max_tokens) for m, p in zip(route.models, prompts)]
            sampling = [
                Sampling(b, fields.temperature, fields.top_p, tuple(stop), fields.seed) for b in budgets
            ]
            return prompts, sampling

        while True:
            prompts, samplings = await asyncio.to_thread(ready, route)
            current = await self.route(name)  # a loaded route: returns at once, no suspension
            if current is route:
                return Job(new_prediction_id(), route, endpoint, prompts, samplings)
            route = current  # a reload swapped it meanwhile: ready the prompt for the new version

    def admit(self, job: Job) -> None:
        """Count ``job`` as running or waiting on its route; 429 when the route's queue is full."""
        name, limits = job.route.name, self.config.limits
        with self._lock:
            if self._running.get(name, 0) >= self.config.generation.workers + limits.max_queue:
                self.metrics.rejected.labels("overloaded").inc()
                raise ApiError(
                    429,
                    "overloaded",
                    f"model {name!r} has {limits.max_queue} generations waiting "
                    f"(limits.max_queue); retry after {limits.retry_after_s} s",
                    "max_queue",
                    headers={"Retry-After": str(limits.retry_after_s)},
                )
            self._running[name] = self._running.get(name, 0) + 1
            self._on_route[id(job.route)] = self._on_route.get(id(job.route), 0) + 1

    async def run(
        self, job: Job, on_text: Callable[[str], None] | None = None, cancelled: threading.Event | None = None
    ) -> Result:
        """Run an admitted ``job`` in a worker thread when a slot is free, then log it (503 if it cannot)."""
        name = job.route.name
        slots = self._slots.setdefault(name, asyncio.Semaphore(self.config.generation.workers))
        try:
            async with slots:
                answers = await asyncio.to_thread(
                    job.route.complete, job.prompts, job.samplings, on_text, cancelled
                )
        finally:
            with self._lock:
                self._running[name] -= 1
                left = self._on_route.pop(id(job.route)) - 1
                if left:
                    self._on_route[id(job.route)] = left
        result = Result(job.id, answers)
        if result.final.output.finish_reason == "cancelled":
            return result  # the client left: nothing was answered, nothing is logged
        record = to_generation(result.id, name, job.endpoint, answers, self.config.privacy)
        try:
            await asyncio.to_thread(self.store.log_generation, record)
        except LogStoreError as exc:
            raise ApiError(
                503,
                "store_unavailable",
                f"the generation could not be logged, so it is not answered: {exc}",
                headers={"Retry-After": str(self.config.limits.retry_after_s)},
            ) from None
        for answer in answers:
            self.metrics.generations.labels(answer.served.record.id).inc()
            self.metrics.generated_tokens.labels(answer.served.record.id).inc(len(answer.output.token_ids))
        if len(answers) > 1:
            self.metrics.escalations.labels(name).inc()
        return result
