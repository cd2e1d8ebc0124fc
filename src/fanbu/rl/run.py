"""``fanbu rl train-experts`` (one small expert policy per training variant) and ``fanbu rl adapt`` (a policy
fine-tuned to one variant), registered with provenance."""

from __future__ import annotations

from typing import Any

from fanbu.errors import ConfigError
from fanbu.registry.workspace import Workspace
from fanbu.rl.artefacts import load_registered_policy, policy_provenance, register_policy
from fanbu.rl.evaluate import evaluate_policy, random_return
from fanbu.rl.experts import train_experts
from fanbu.rl.feedback import expert_name, general_name
from fanbu.rl.ppo import train_ppo
from fanbu.rl.recipe import RLRecipe

RUN_KIND = "rl-experts"
ADAPT_KIND = "rl-adapt"


def run_train_experts(recipe: RLRecipe, workspace: Workspace) -> list[dict[str, Any]]:
    """Train, score (greedy, ``recipe.episodes`` test episodes) and register an expert per training variant.

    Each expert is registered as ``<variant>.expert`` (the next version), its provenance holding the
    resolved recipe, the variant's fingerprint and its test return; the run is recorded as ``rl-experts``.
    """
    family = recipe.family_spec()
    variants = family.variants("train")
    config = recipe.model_dump(mode="json")
    rows = []
    with workspace.run(RUN_KIND, recipe) as run:
        experts = train_experts(variants, recipe.ppo, recipe.seed)
        for variant in variants:
            result = experts[variant.name]
            value = evaluate_policy(result.actor, variant, recipe.episodes, "test", recipe.seed).mean
            floor = random_return(variant, recipe.episodes, "test", recipe.seed).mean
            provenance = policy_provenance(result.actor, [variant], config,
                                           metrics={"test_return": value, "random_test_return": floor})
            record = register_policy(workspace, result.actor, provenance, name=expert_name(variant.name),
                                     metadata={"env_steps": result.steps, "run": run.id})
            rows.append({"variant": variant.name, "id": record.id, "return": value, "random_return": floor,
                         "env_steps": result.steps})
        run.summary = {"family": family.name, "experts": rows}
    return rows


def run_rl_adapt(recipe: RLRecipe, workspace: Workspace, variant: str, model: str | None = None) -> dict[str, Any]:
    """PPO fine-tuning of a policy on one variant (a new industry), registered as ``<variant>.adapted``.

    ``model``: a registry reference (default: the champion of ``<family>.general``). The policy trains for
    ``adaptation.max_steps`` environment steps (``recipe.ppo`` settings, a fresh critic) and is scored
    before and after on the variant's test episodes; the result's parent is the policy it started from.
    """
    family = recipe.family_spec()
    variants = {v.name: v for v in family.variants("all")}
    if variant not in variants:
        raise ConfigError(f"variant {variant!r} is not in family {family.name!r}; its variants: "
                          f"{', '.join(variants)}")
    target = variants[variant]
    reference = model or general_name(family.name)
    record = workspace.resolve(reference, status=None if model else "champion")
    start = load_registered_policy(workspace, record)
    config = recipe.model_dump(mode="json")
    with workspace.run(ADAPT_KIND, recipe) as run:
        before = evaluate_policy(start, target, recipe.episodes, "test", recipe.seed).mean
        result = train_ppo([target], recipe.ppo, recipe.seed, total_steps=recipe.adaptation.max_steps, init=start)
        after = evaluate_policy(result.actor, target, recipe.episodes, "test", recipe.seed).mean
        provenance = policy_provenance(result.actor, [target], config, parents=[record.id],
                                       metrics={"test_return": after, "test_return_before": before},
                                       base_model=record.id, base_model_relation="finetune")
        adapted = register_policy(workspace, result.actor, provenance, name=f"{variant}.adapted",
                                  relation="finetune", metadata={"env_steps": result.steps, "run": run.id})
        run.summary = {"variant": variant, "from": record.id, "model": adapted.id, "return_before": before,
                       "return_after": after, "env_steps": result.steps}
        return dict(run.summary)
