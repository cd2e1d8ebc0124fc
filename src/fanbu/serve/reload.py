"""Reloading: served references re-resolved, new versions loaded off the request path, routes rebuilt.

A reload re-resolves the references the server serves by the rule it used when it first loaded them
(:meth:`~fanbu.registry.workspace.Workspace.resolve`: ``name`` means its latest registered version,
``name:vN`` always that version). :func:`plan_reload` runs in a worker thread while the old versions
keep answering: it loads and warms up (one prediction) each new version and builds the routes that
use them, cascades included, beside the old ones. Nothing is swapped unless every new version of the
reload loaded; :meth:`fanbu.serve.state.ServerState.reload` then swaps them in one step on the event
loop and drains the old routes' batchers (see its docstring). Served causal LMs are re-resolved by the
same reload, with the same :func:`resolve` and :func:`load` (:mod:`fanbu.serve.lm_reload`).

:func:`watch` is the optional registry watch (``ServeConfig.watch_seconds``): it polls the registry
and reloads a served reference when it resolves to a newer version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from fanbu.errors import ConfigError, FanbuError
from fanbu.registry import ModelRecord
from fanbu.registry.workspace import UnknownModelError, Workspace, parse_ref
from fanbu.serve.cascade import Route
from fanbu.serve.config import CascadeConfig
from fanbu.serve.models import ModelPool, Served

log = logging.getLogger("fanbu.serve")

REASON_CHARS = 500  # longest load error quoted in a reload's error message


class ReloadError(FanbuError):
    """A reload could not use a new version; every old version keeps serving."""


class Loaded(Protocol):
    """A loaded model of either pool: a classifier (:class:`Served`) or a causal LM."""

    @property
    def record(self) -> ModelRecord:
        """The registered version it was loaded from."""
        ...


L = TypeVar("L", bound=Loaded)


class Pool(Protocol[L]):
    """What a reload needs of a model pool: the workspace refs resolve in, and loading one version."""

    workspace: Workspace

    def load(self, record: ModelRecord) -> L:
        """``record`` loaded and warmed up, without pointing any ref at it."""
        ...


M = TypeVar("M")  # what a route answers with: a Served classifier or a ServedLM
R = TypeVar("R")  # a route: cascade.Route or lm_cascade.LMRoute


class SmallLarge(Protocol[M]):
    """A route, or a cascade's config: what it answers with first (``small``) and, in a cascade, ``large``."""

    @property
    def small(self) -> M: ...

    @property
    def large(self) -> M | None: ...


@dataclass(frozen=True)
class Change(Generic[M]):
    """A served reference that resolves to a new version: the loaded old and new models (or LMs)."""

    ref: str
    old: M
    new: M


@dataclass
class Plan(Generic[M, R]):
    """What a reload swaps: the changed references, the unchanged ones, and the rebuilt routes."""

    changes: list[Change[M]] = field(default_factory=list)
    unchanged: dict[str, str] = field(default_factory=dict)  # ref -> the id that keeps answering
    routes: dict[str, R] = field(default_factory=dict)  # route name -> its route on the new versions


def route_refs(name: str, cascades: Mapping[str, SmallLarge[str]]) -> tuple[str, str | None]:
    """The references a route answers with: ``(small, large)`` of a cascade (classifier or LM), else
    ``(name, None)``."""
    cascade = cascades.get(name)
    return (name, None) if cascade is None else (cascade.small, cascade.large)


def served_refs(routes: Mapping[str, SmallLarge[M]], cascades: Mapping[str, SmallLarge[str]]) -> dict[str, M]:
    """Every reference the routes answer with -> the model (or LM) it answers with now."""
    refs: dict[str, M] = {}
    for name, route in routes.items():
        small, large = route_refs(name, cascades)
        refs[small] = route.small
        if large is not None and route.large is not None:
            refs[large] = route.large
    return refs


def plan_reload(
    pool: ModelPool,
    routes: Mapping[str, Route],
    cascades: Mapping[str, CascadeConfig],
    refs: Mapping[str, Served],
) -> Plan[Served, Route]:
    """Re-resolve ``refs`` (ref -> the model serving it), load what is new, rebuild affected routes.

    Blocking: run it in a worker thread. Routes are built, never changed in place, so the old ones
    keep answering until the caller swaps.

    Raises:
        ReloadError: a reference no longer resolves, a new version cannot be loaded or warmed up, or a
            cascade's new pair shares no head; the message says which, why, and what to do.
    """
    plan: Plan[Served, Route] = Plan()
    for ref, current in refs.items():
        record = resolve(pool, ref, current)
        if record.id == current.record.id:
            plan.unchanged[ref] = current.record.id
            continue
        plan.changes.append(Change(ref, current, load(pool, ref, record, current)))
    new = {change.ref: change.new for change in plan.changes}
    for name, route in routes.items():
        small_ref, large_ref = route_refs(name, cascades)
        small = new.get(small_ref, route.small)
        large = new.get(large_ref, route.large) if large_ref is not None else route.large
        if small is route.small and large is route.large:
            continue
        try:
            plan.routes[name] = Route(name, small, large, route.threshold)
        except ConfigError as exc:
            raise ReloadError(
                f"reload failed: {exc}; {_ids(route)} keep serving. Register a {small_ref} version with the "
                f"{large_ref} heads and labels, then reload again"
            ) from None
    return plan


def resolve(pool: Pool[L], ref: str, current: Loaded) -> ModelRecord:
    """The record ``ref`` resolves to now; a :class:`ReloadError` saying what to do if none."""
    try:
        return pool.workspace.resolve(ref)
    except UnknownModelError as exc:
        raise ReloadError(
            f"reload of {ref!r} failed: {exc}; {current.record.id} keeps serving. Register {ref} again, "
            "or restart the server without it"
        ) from None


def load(pool: Pool[L], ref: str, record: ModelRecord, current: Loaded) -> L:
    """``record`` loaded by ``pool``; a :class:`ReloadError` naming it, why and what to do if not."""
    try:
        return pool.load(record)
    except Exception as exc:  # noqa: BLE001 - a broken directory fails in many ways; each leaves the old one
        reason = (str(exc) if isinstance(exc, FanbuError) else f"{type(exc).__name__}: {exc}")[:REASON_CHARS]
        name = parse_ref(ref)[0]
        raise ReloadError(
            f"reload of {ref!r} failed: its new version {record.id} ({record.path}) could not be loaded "
            f"({reason}); {current.record.id} keeps serving. Fix or re-save {record.id}, or register a "
            f"newer version of {name} (see `fanbu models --name {name}`), then reload again"
        ) from None


def _ids(route: Route) -> str:
    return " and ".join(s.record.id for s in (route.small, route.large) if s is not None)


async def watch(
    interval_s: float,
    serving: Callable[[], Mapping[str, Loaded]],
    resolve: Callable[[str], ModelRecord],
    reload: Callable[[str], Awaitable[object]],
) -> None:
    """Every ``interval_s``, reload each served reference that resolves to a newer version (until cancelled).

    Args:
        interval_s: Seconds between two polls of the registry.
        serving: Served reference -> the model answering for it now (called on the event loop).
        resolve: Blocking: the record a reference resolves to now (run in a worker thread).
        reload: Reloads one reference; raises :class:`ReloadError` (or an API error) when it fails.

    A version that failed to load is logged once and not tried again; a newer one is.
    """
    failed: set[str] = set()
    while True:
        await asyncio.sleep(interval_s)
        now = serving()
        fresh = await asyncio.to_thread(_poll, list(now), resolve)
        for ref, new_id in fresh.items():
            if new_id == now[ref].record.id or new_id in failed:
                continue
            try:
                await reload(ref)
            except Exception as exc:  # noqa: BLE001 - logged; the old version keeps serving
                failed.add(new_id)
                log.warning("registry watch: %s", getattr(exc, "message", exc))
            else:
                log.warning("registry watch: %s now answers with %s", ref, new_id)


def _poll(refs: list[str], resolve: Callable[[str], ModelRecord]) -> dict[str, str]:
    """Reference -> the id it resolves to now; one that fails to resolve is logged and left out."""
    fresh: dict[str, str] = {}
    for ref in refs:
        try:
            fresh[ref] = resolve(ref).id
        except Exception as exc:  # noqa: BLE001 - a registry hiccup must not end the watch
            log.warning("registry watch: could not resolve %r (%s); trying again at the next poll", ref, exc)
    return fresh
