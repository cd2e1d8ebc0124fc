"""One draw of ``fanbu bench rl``: one family, one seed, every row of the report.

1. **experts**: PPO per training variant from one shared initialisation, registered with provenance;
2. **general** policies, each scored on every training variant:
   ``distill`` (multi-teacher DAgger distillation into the larger general shape), ``multi_ppo`` (one PPO
   on all training variants together for as many environment steps as the experts took together plus the
   distillation's DAgger rollouts: the honest baseline), ``average`` (the experts' uniform weight average);
3. **gate**: ``multi_ppo`` is the champion; ``distill`` and ``average`` are gated against it on the
   gate episodes and the best that passes is promoted, in the registry;
4. **adapt**: per held-out variant, PPO fine-tuning from the Reptile meta-init (by default Reptile starts
   from the distilled policy, with a critic warmed up on it), from the distilled policy (a fresh critic)
   and from scratch, counting environment steps to 90% of the way from a random policy to the
   variant's own expert (trained for reference only).

Reported returns are greedy means over the ``test`` episode seeds; every choice (the gate, the stopping
test of adaptation and its target) reads the ``gate`` seeds.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from fanbu.registry.workspace import Workspace
from fanbu.rl.adapt import steps_to_target
from fanbu.rl.artefacts import policy_provenance, register_policy
from fanbu.rl.distill import distill_policies
from fanbu.rl.evaluate import evaluate_policy, normalized, random_return, target_return
from fanbu.rl.experts import run_seed, shared_init, train_experts
from fanbu.rl.feedback import expert_name
from fanbu.rl.gate import promote_best
from fanbu.rl.merge import merge_policies
from fanbu.rl.policy import PolicyMLP, new_policy
from fanbu.rl.ppo import actor_from_state, train_ppo
from fanbu.rl.recipe import RLRecipe
from fanbu.rl.reptile import meta_train
from fanbu.rl.variants import Variant

GENERAL = ("distill", "multi_ppo", "average")
INITS = ("meta", "distilled", "scratch")


def _ratio(value: float, floor: float, expert: float) -> float | None:
    """``normalized``, or ``None`` where the expert is no better than random (too few PPO steps)."""
    return normalized(value, floor, expert) if expert - floor > 1e-9 else None


def _returns(policy: PolicyMLP, variants: list[Variant], episodes: int, split: str, seed: int) -> dict[str, float]:
    return {v.name: evaluate_policy(policy, v, episodes, split, seed).mean for v in variants}


def run_draw(recipe: RLRecipe, seed: int, workspace: Workspace, console: Console) -> dict[str, Any]:
    """Every row of the report for one family and one seed (``recipe.seed + seed`` seeds the draw)."""
    started, phases = time.perf_counter(), {}
    family = recipe.family_spec()
    train, held = family.variants("train"), family.variants("held_out")
    s, episodes, ppo = recipe.seed + seed, recipe.episodes, recipe.ppo
    config = recipe.model_dump(mode="json")
    # every draw registers under its own names: its general policies compete among themselves, and draws
    # running in parallel processes never race for the same name's next version
    tag = f"{family.name}-seed{s}"

    def phase(name: str, since: float) -> float:
        phases[name] = time.perf_counter() - since
        console.print(f"  {family.name} seed {seed}: {name} {phases[name]:.0f} s", highlight=False)
        return time.perf_counter()

    t = time.perf_counter()
    init = shared_init(train, ppo, s)
    experts = train_experts(train, ppo, s, init)
    expert_steps = sum(r.steps for r in experts.values())
    floors = {v.name: random_return(v, episodes, "test", s).mean for v in train}
    expert_returns = {v.name: evaluate_policy(experts[v.name].actor, v, episodes, "test", s).mean for v in train}
    expert_ids = {}
    for v in train:
        provenance = policy_provenance(experts[v.name].actor, [v], config, metrics={"test_return": expert_returns[v.name]})
        expert_ids[v.name] = register_policy(workspace, experts[v.name].actor, provenance, name=f"{tag}.{expert_name(v.name)}",
                                             metadata={"env_steps": experts[v.name].steps}).id
    t = phase("experts", t)

    first = experts[train[0].name].actor
    student = new_policy(first.obs_dim, first.n_actions, recipe.general, seed=s)
    distilled = distill_policies(student, {n: r.actor for n, r in experts.items()}, train, recipe.distill, s)
    t = phase("distill", t)
    # the baseline gets every environment step the distilled policy cost: the experts' and DAgger's rollouts
    multi = train_ppo(train, ppo, run_seed(s, len(train)), total_steps=expert_steps + distilled.states, init=init)
    t = phase("multi_ppo", t)
    average = merge_policies({n: r.actor for n, r in experts.items()}, base=actor_from_state(init, train[0], ppo))
    policies = {"distill": student, "multi_ppo": multi.actor, "average": average}
    general = []
    for method in GENERAL:
        returns = _returns(policies[method], train, episodes, "test", s)
        general += [{"method": method, "variant": v.name, "return": returns[v.name], "expert_return": expert_returns[v.name],
                     "random_return": floors[v.name],
                     "ratio_to_expert": _ratio(returns[v.name], floors[v.name], expert_returns[v.name])}
                    for v in train]
    parents = list(expert_ids.values())
    champion = register_policy(workspace, multi.actor, policy_provenance(multi.actor, train, config),
                               name=f"{tag}.general", status="champion",
                               metadata={"method": "multi_ppo", "env_steps": multi.steps})
    candidates = {
        "distill": (register_policy(workspace, student, policy_provenance(student, train, config, parents=parents),
                                    name=f"{tag}.general", relation="distilled",
                                    metadata={"method": "distill", "states": distilled.states}), student),
        "average": (register_policy(workspace, average, policy_provenance(
                        average, train, config, parents=parents, base_model=parents[0], base_model_relation="merge"),
                        name=f"{tag}.general", relation="merge", metadata={"method": "average"}), average),
    }
    gate = promote_best(workspace, champion, multi.actor, candidates, train, recipe.gate, s)
    t = phase("general+gate", t)

    meta = meta_train(train, ppo, recipe.reptile, s, init=student if recipe.reptile.start == "general" else init)
    register_policy(workspace, meta.actor, policy_provenance(meta.actor, train, config), name=f"{tag}.meta",
                    metadata={"method": "reptile", "env_steps": meta.steps})
    t = phase("reptile", t)
    adapt, references = [], []
    for index, v in enumerate(held):
        reference = train_ppo([v], ppo, run_seed(s, 100 + index), init=init)
        gate_expert = evaluate_policy(reference.actor, v, episodes, "gate", s).mean
        gate_floor = random_return(v, episodes, "gate", s).mean
        target = target_return(gate_floor, gate_expert, recipe.adaptation.fraction)
        references.append({"variant": v.name, "expert_gate_return": gate_expert, "random_gate_return": gate_floor,
                           "target": target, "env_steps": reference.steps})
        inits = {"meta": (meta.state, meta.ppo), "distilled": (student, ppo), "scratch": (None, ppo)}
        for name in INITS:
            start, settings = inits[name]
            result = steps_to_target(v, start, target, settings, recipe.adaptation, run_seed(s, 200 + index),
                                     eval_seed=s)
            adapt.append({"init": name, "variant": v.name, "steps_to_90pct": result.steps,
                          "reached": result.steps is not None, "curve": result.curve})
    phase("adapt", t)
    return {
        "family": family.name, "seed": s,
        "experts": [{"variant": v.name, "return": expert_returns[v.name], "random_return": floors[v.name],
                     "env_steps": experts[v.name].steps, "id": expert_ids[v.name]} for v in train],
        "general": general, "gate": gate, "adapt": adapt, "adapt_references": references,
        "env_steps": {"experts": expert_steps, "multi_ppo": multi.steps, "reptile": meta.steps,
                      "distill_states": distilled.states},
        "distill_agreement": {"rounds": distilled.rounds, "final": distilled.final},
        "seconds": time.perf_counter() - started, "phases": phases,
    }
