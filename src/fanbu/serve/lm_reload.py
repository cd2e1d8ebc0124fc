"""Reloading served causal LMs: references re-resolved, new versions loaded off the request path.

The LM half of :mod:`fanbu.serve.reload`, by the same rule: ``name`` means its latest registered
version, ``name:vN`` always that version. :func:`plan_lm_reload` runs in a worker thread while the old
versions keep generating: it loads each new version (eval mode, warmed up by one token, see
:func:`~fanbu.serve.lm_models.load_lm`) and builds new :class:`~fanbu.serve.lm_cascade.LMRoute` objects
on them, LM cascades included, beside the old ones. :meth:`fanbu.serve.lm_state.LMService.swap` then
puts them in place in one step, and :meth:`~fanbu.serve.lm_state.LMService.drain` waits for the
generations already running on the old routes, streams included, to finish on the old versions.
"""

from __future__ import annotations

from collections.abc import Mapping

from fanbu.serve.lm_cascade import LMRoute
from fanbu.serve.lm_config import LMCascadeConfig
from fanbu.serve.lm_models import LMPool, ServedLM
from fanbu.serve.reload import Change, Plan, load, resolve, route_refs, served_refs

LMChange = Change[ServedLM]  # a served LM reference that resolves to a new version
LMPlan = Plan[ServedLM, LMRoute]  # what a reload swaps on the LM side
lm_route_refs = route_refs  # the references an LM route generates with: (small, large) of an LM cascade
served_lm_refs = served_refs  # every reference the LM routes generate with -> the LM it generates with now


def plan_lm_reload(
    pool: LMPool,
    routes: Mapping[str, LMRoute],
    cascades: Mapping[str, LMCascadeConfig],
    refs: Mapping[str, ServedLM],
) -> LMPlan:
    """Re-resolve ``refs`` (ref -> the LM serving it), load what is new, rebuild the affected routes.

    Blocking: run it in a worker thread. Routes are built, never changed in place, so requests that
    hold an old route keep generating on the old versions.

    Raises:
        ReloadError: a reference no longer resolves, or a new version is not a causal LM or cannot be
            loaded; the message says which, why, and what to do.
    """
    plan = LMPlan()
    for ref, current in refs.items():
        record = resolve(pool, ref, current)
        if record.id == current.record.id:
            plan.unchanged[ref] = current.record.id
            continue
        plan.changes.append(LMChange(ref, current, load(pool, ref, record, current)))
    new = {change.ref: change.new for change in plan.changes}
    for name, route in routes.items():
        small_ref, large_ref = lm_route_refs(name, cascades)
        small = new.get(small_ref, route.small)
        large = new.get(large_ref, route.large) if large_ref is not None else route.large
        if small is not route.small or large is not route.large:
            plan.routes[name] = LMRoute(name, small, large, route.threshold)
    return plan
