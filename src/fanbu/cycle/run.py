"""``fanbu cycle``: generation after generation of derive -> experts -> feed back -> gate -> promote.

Each generation starts from the current champion: it derives the small deployable models from it
(their lineage parent: the champion), then runs one feedback step (:func:`run_feedback`, unchanged),
which trains the experts from the champion, makes a candidate per strategy, gates them and promotes
the best one that passes. That winner is the next generation's champion.

Every decision reads the **gate** splits (each task's validation split cut in two; the test splits are
scored for the report only). The gate splits stay the same from one generation to the next, so each
generation records the gate fingerprints its decision read and ``gate_reuse``: how many earlier
generations of this cycle decided on the same ones. Past ``gate_reuse_limit`` it warns: the promotions
have started to fit the gate texts, and its scores grow optimistic (add gate data, or accept that).

When no candidate passes, the cycle **stops** by default: the next generation would start from the
same champion with the same swarm and be gated on the same gate splits, and retrying until a reseeded
run happens to pass is selection on the gate split. ``on_no_promotion: continue`` runs it anyway,
reusing the generation's small models and experts (they depend only on the champion) and reseeding the
strategies (``seed + generation``).

Resumable: each finished generation is a registry run of kind ``cycle`` whose recipe names the cycle
(a hash of the recipe without ``generations`` and ``on_no_promotion``) and the generation. Running the
same recipe again skips the generations recorded as succeeded and continues from the registry's
current champion.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fanbu.cycle.deploy import deploy_and_adapt
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.cycle.recipe import CycleRecipe
from fanbu.cycle.tables import print_adapted, print_feedback, print_small
from fanbu.derive.pipeline import run_derive
from fanbu.errors import ConfigError
from fanbu.feedback.pipeline import run_feedback
from fanbu.io import sha256_json
from fanbu.registry import ModelRecord, Registry, RunRecord
from fanbu.registry.workspace import Workspace, parse_ref

RUN_KIND = "cycle"


def cycle_id(recipe: CycleRecipe | LMCycleRecipe) -> str:
    """The cycle's identity across reruns: a short hash of :meth:`CycleRecipe.key`."""
    return sha256_json(recipe.key())[:16]


def finished_generations(registry: Registry, cycle: str) -> dict[int, RunRecord]:
    """Generation -> the succeeded ``cycle`` run that recorded it, for the cycle ``cycle``."""
    done = {}
    for run in registry.list_runs():
        if run.kind == RUN_KIND and run.status == "succeeded" and run.recipe.get("cycle") == cycle:
            done.setdefault(int(run.recipe["generation"]), run)
    return done


def gate_reuse(registry: Registry, cycle: str, generation: int, fingerprints: dict[str, str]) -> int:
    """How many earlier finished generations of ``cycle`` decided on the gate splits ``fingerprints``
    (task -> fingerprint); 0 when none are given."""
    if not fingerprints:
        return 0
    return sum(
        1
        for done, run in finished_generations(registry, cycle).items()
        if done < generation and run.summary.get("gate_fingerprints") == fingerprints
    )


def run_cycle(
    recipe: CycleRecipe, registry: Registry, generations: int | None = None, console: Console | None = None
) -> list[dict[str, Any]]:
    """Run the recipe's generations (``generations`` overrides its count); one summary per generation.

    Summaries of generations finished by an earlier run are returned with ``skipped: True``.
    """
    workspace = Workspace(registry)
    console = console or Console()
    total = generations if generations is not None else recipe.generations
    if total < 1:
        raise ConfigError(f"--generations {total}: run at least one generation")
    cycle = cycle_id(recipe)
    done = finished_generations(registry, cycle)
    name = parse_ref(recipe.champion)[0]
    summaries: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for generation in range(total):
        if generation in done:
            run = done[generation]
            summary = {**run.summary, "skipped": True}
            console.print(
                f"generation {generation}: finished in run {run.id} ({outcome(summary)}); not redone",
                highlight=False,
            )
        else:
            champion = workspace.champion(recipe.champion if not summaries and not done else name)
            if previous is not None and previous["champion_out"] != champion.id:
                console.print(
                    f"note: the champion is now {champion.id}, not {previous['champion_out']} "
                    "(changed since the last generation); continuing from it",
                    highlight=False,
                )
            if champion.kind == "causal_lm":
                raise ConfigError(
                    f"champion: {champion.id} is a causal LM, but this cycle recipe is a classification one; "
                    "add task: causal_lm (see recipes/lm-cycle.yaml), or name an encoder classifier"
                )
            summary = run_generation(recipe, registry, cycle, generation, champion, previous, console)
        summaries.append(summary)
        previous = summary
        if summary["promoted"] is None and recipe.on_no_promotion == "stop":
            console.print(
                f"generation {generation}: no candidate passed the gate; the cycle stops "
                "(set on_no_promotion: continue to go on from the same champion)",
                highlight=False,
            )
            break
    return summaries


def run_generation(
    recipe: CycleRecipe,
    registry: Registry,
    cycle: str,
    generation: int,
    champion: ModelRecord,
    previous: dict[str, Any] | None,
    console: Console,
) -> dict[str, Any]:
    """One generation from ``champion``, recorded as a ``cycle`` run; its summary."""
    workspace = Workspace(registry)
    with workspace.run(
        RUN_KIND, {"cycle": cycle, "generation": generation, "recipe": recipe.model_dump(mode="json")}
    ) as run:
        console.print(f"[bold]Generation {generation}[/] from {champion.id}", highlight=False)
        same = previous is not None and previous["champion_in"] == champion.id
        small: dict[str, str] = {}
        if recipe.derive.enabled:
            if same and previous and previous.get("small"):
                small = dict(previous["small"])
                console.print(
                    f"small models of {champion.id} reused from generation {previous['generation']}"
                )
            else:
                max_length = recipe.max_length or workspace.load_encoder(champion).max_length
                console.print(f"deriving a small model per domain from {champion.id}", highlight=False)
                rows = run_derive(recipe.derive_recipe(champion.id, max_length), registry)
                small = {row["domain"]: row["final"] for row in rows}
                print_small(console, rows, champion.id)
        deployment: dict[str, Any] | None = None
        swarm = small
        if recipe.deployment.enabled and small:
            console.print("serving the small models to this generation's traffic, collecting, adapting")
            deployment = deploy_and_adapt(
                recipe.deployment,
                recipe.data,
                recipe.derive.max_train,
                registry,
                f"cycle-{cycle[:8]}",
                generation,
                champion.id,
                small,
                recipe.seed + generation,
                console,
            )
            swarm = dict(deployment["adapted"])
            print_adapted(console, deployment)
        if recipe.experts.source == "small":
            experts: dict[str, str] | None = swarm
        else:
            experts = dict(previous["experts"]) if same and previous else None
        collected = deployment["collected"]["dataset"] if deployment else None
        feedback = run_feedback(recipe.feedback_recipe(champion.id, generation, experts, collected), registry)
        promoted = feedback["promoted"]
        gates = dict(feedback.get("gate_fingerprints") or {})
        reuse = gate_reuse(registry, cycle, generation, gates)
        summary = {
            "cycle": cycle,
            "generation": generation,
            "run": run.id,
            "champion_in": champion.id,
            "champion_out": promoted or champion.id,
            "promoted": promoted,
            "small": small,
            "deployment": deployment,
            "experts": feedback["experts"],
            "feedback_run": feedback["run"],
            "decision_split": "gate",
            "gate_fingerprints": gates,
            "gate_reuse": reuse,
            "strategies": [
                {k: row[k] for k in ("name", "model", "pgr_mean", "forgetting", "gate")}
                for row in feedback["strategies"]
            ],
        }
        run.summary = summary
    print_feedback(console, feedback, title=f"generation {generation}: candidates from {champion.id}")
    console.print(f"generation {generation}: {outcome(summary)}", highlight=False)
    if reuse > recipe.gate_reuse_limit:
        console.print(
            f"[yellow]warning[/]: generation {generation} decided on the same gate splits as {reuse} earlier "
            f"generation(s) of this cycle (gate_reuse_limit: {recipe.gate_reuse_limit}); the gate's scores grow "
            "optimistic with each reuse. Add gate data (more validation examples, a larger data.gate_fraction) "
            "or accept the optimism (raise gate_reuse_limit); the test splits, scored for the report only, "
            "stay unbiased.",
            highlight=False,
        )
    return summary


def outcome(summary: dict[str, Any]) -> str:
    """One line: who was promoted over whom, or that the champion stays."""
    if summary["promoted"]:
        return f"{summary['promoted']} promoted over {summary['champion_in']}"
    return f"no candidate passed; {summary['champion_in']} stays champion"
