"""``fanbu rl feedback``: the registered experts feed back into the family's general policy, behind the gate.

The experts are the newest ``<variant>.expert`` of every training variant (``fanbu rl train-experts``).
Candidates, each registered as the next ``<family>.general`` with the experts as parents: ``distill``
(multi-teacher DAgger distillation into ``recipe.general``'s shape) and ``average`` (the experts'
uniform weight average, when they share one architecture). Against the current champion of
``<family>.general`` the best candidate that passes the gate on returns is promoted
(:func:`fanbu.rl.gate.promote_best`); with no champion yet there is nothing to regress against, so the
candidate with the best mean gate return becomes the first one.
"""

from __future__ import annotations

import statistics
from typing import Any

from fanbu.errors import ConfigError, RegistryError
from fanbu.registry.workspace import Workspace
from fanbu.rl.artefacts import load_registered_policy, policy_provenance, register_policy
from fanbu.rl.distill import distill_policies
from fanbu.rl.evaluate import evaluate_policy
from fanbu.rl.gate import promote_best
from fanbu.rl.merge import merge_policies
from fanbu.rl.policy import PolicyMLP, new_policy
from fanbu.rl.recipe import RLRecipe

RUN_KIND = "rl-feedback"


def expert_name(variant: str) -> str:
    """The registry name of a variant's expert policy."""
    return f"{variant}.expert"


def general_name(family: str) -> str:
    """The registry name of a family's general policy."""
    return f"{family}.general"


def run_rl_feedback(recipe: RLRecipe, workspace: Workspace) -> dict[str, Any]:
    """Distil and average the registered experts into candidates, gate them, promote the best; the summary."""
    family = recipe.family_spec()
    train = family.variants("train")
    config = recipe.model_dump(mode="json")
    name = general_name(family.name)
    with workspace.run(RUN_KIND, recipe) as run:
        records = {}
        for variant in train:
            try:
                records[variant.name] = workspace.resolve(expert_name(variant.name))
            except RegistryError:
                raise ConfigError(f"no expert {expert_name(variant.name)!r} in the registry for training variant "
                                  f"{variant.name!r}; run `fanbu rl train-experts` with this recipe first") from None
        experts = {n: load_registered_policy(workspace, r) for n, r in records.items()}
        parents = [r.id for r in records.values()]
        first = experts[train[0].name]
        student = new_policy(first.obs_dim, first.n_actions, recipe.general, seed=recipe.seed)
        distilled = distill_policies(student, experts, train, recipe.distill, recipe.seed)
        policies: dict[str, PolicyMLP] = {"distill": student}
        skipped = {}
        try:
            policies["average"] = merge_policies(experts)
        except ConfigError as exc:  # experts of different shapes: only distillation applies
            skipped["average"] = str(exc)
        relations = {"distill": "distilled", "average": "merge"}
        candidates = {
            method: (register_policy(workspace, policy, policy_provenance(policy, train, config, parents=parents),
                                     name=name, relation=relations[method], metadata={"method": method, "run": run.id}),
                     policy)
            for method, policy in policies.items()
        }
        champion = workspace.registry.latest(name, status="champion")
        if champion is None:
            decisions = _crown_first(workspace, candidates, train, recipe)
        else:
            decisions = promote_best(workspace, champion, load_registered_policy(workspace, champion), candidates,
                                     train, recipe.gate, recipe.seed)
        run.summary = {"family": family.name, "experts": parents, "champion": champion.id if champion else None,
                       "decisions": decisions, "skipped": skipped, "distill_agreement": distilled.final}
        return dict(run.summary)


def _crown_first(workspace: Workspace, candidates: dict[str, tuple[Any, PolicyMLP]], train: list,
                 recipe: RLRecipe) -> dict[str, dict[str, Any]]:
    """No champion yet: the candidate with the best mean gate return becomes the first."""
    means = {m: statistics.fmean(evaluate_policy(p, v, recipe.gate.episodes, "gate", recipe.seed).mean for v in train)
             for m, (_, p) in candidates.items()}
    best = max(means, key=lambda m: means[m])
    out = {}
    for method, (record, _) in candidates.items():
        if method == best:
            status, reason = "champion", f"the first general policy: best mean gate return {means[method]:.1f}"
        else:
            status = "rejected"
            reason = f"rejected: mean gate return {means[method]:.1f} below {best}'s {means[best]:.1f}"
        updated = workspace.registry.set_status(record.id, status, reason)
        out[method] = {"id": updated.id, "promoted": method == best, "reason": reason, "status": updated.status,
                       "gate_mean": means[method], "champion_gate_mean": None}
    return out
