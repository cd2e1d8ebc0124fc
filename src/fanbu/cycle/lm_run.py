"""``fanbu cycle`` on causal LMs: derive small LMs -> serve them -> collect -> feed back -> LM gate -> repeat.

Each generation starts from the current champion LM: it derives a small LM per domain from it (the LM
derive stages, the champion their teacher and first lineage parent), serves them through a real
``fanbu serve`` to simulated users who rate and correct completions (:mod:`fanbu.cycle.lm_deploy`),
curates those logs into an LM dataset, and runs one ``task: causal_lm`` feedback step
(:func:`~fanbu.feedback.pipeline.run_feedback`, unchanged): every LM strategy makes a candidate (the
small LMs its teachers, the collected pairs its corrections), the LM gate decides on the gate splits,
and the best candidate that passes is promoted and is the next generation's champion.

Texts keep their roles: the small LMs train on part of each domain's private slice (``derive.max_train``
of it, seeded), the traffic prompts come from the rest (a fresh block each generation), validation
texts make the derive choices, the gate splits the promotions, the test splits only the report.

Resumable as the classification cycle (:mod:`fanbu.cycle.run`): each finished generation is a ``cycle``
run naming the cycle (a hash of the recipe without ``generations`` and ``on_no_promotion``) and the
generation; running the recipe again skips them and continues from the registry's current champion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.cycle.lm_deploy import deploy_lm
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.cycle.lm_tables import print_lm_traffic, print_small_lms
from fanbu.cycle.run import RUN_KIND, cycle_id, finished_generations, outcome
from fanbu.cycle.tables import print_feedback
from fanbu.data.domain import Benchmark, Split
from fanbu.data.loaders import DomainSource
from fanbu.data.slices import pairs, traffic_pairs
from fanbu.derive.lm.pipeline import run_lm_derive_recipe
from fanbu.errors import ConfigError
from fanbu.feedback.lm.data import lm_domains
from fanbu.feedback.lm.pipeline import load_lm_champion
from fanbu.feedback.pipeline import run_feedback
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace, is_source, parse_ref


def lm_benchmark(recipe: LMCycleRecipe) -> Benchmark:
    """The LM domains cut as the feedback step cuts them (public, private, validation, gate, test)."""
    data = recipe.lm.data
    return Benchmark(tuple(lm_domains(data)), (), data.public_fraction, data.seed, data.gate_fraction)


def private_pool(recipe: LMCycleRecipe, bench: Benchmark, domain: str) -> Split:
    """The part of ``domain``'s private slice the small LM and the traffic draw from: all of it, less the
    texts the LoRA experts train on (the first ``lm.experts.max_train``) with ``experts: lora``."""
    private = bench.private(domain)
    if recipe.experts == "small":
        return private
    used = recipe.lm.experts.max_train
    if used is None:
        if recipe.deployment.enabled:
            raise ConfigError(
                "lm.experts.max_train: with experts: lora the LoRA experts train on the whole private slice, "
                "which leaves no text for the traffic; set lm.experts.max_train"
            )
        return private  # no traffic: the small LM may read what the experts read
    return private.select(range(used, len(private)))


def write_derive_files(recipe: LMCycleRecipe, bench: Benchmark, directory: Path) -> list[DomainSource]:
    """Each domain's derive texts as JSON-lines files under ``directory``: ``derive.max_train`` of its
    private pool (train), its validation part and its test split; one ``task: causal_lm`` source each."""
    seed, sources = recipe.lm.data.seed, []
    for name in (d.name for d in bench.domains):
        train, _ = pairs(private_pool(recipe, bench, name), recipe.derive.max_train, seed)
        splits = {"train": train, "validation": list(bench.validation(name).texts)}
        splits["test"] = list(bench.domain(name).test.texts)
        folder = directory / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, texts in splits.items():
            lines = (json.dumps({"text": t}, ensure_ascii=False) for t in texts)
            (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths = {split: str(folder / f"{split}.jsonl") for split in splits}
        sources.append(DomainSource(name=name, task="causal_lm", **paths))
    return sources


def lm_champion(recipe: LMCycleRecipe, workspace: Workspace, ref: str) -> ModelRecord:
    """The champion ``ref`` names (a source is registered once as ``lm.champion_name:v0``), checked to be
    a causal LM."""
    if is_source(ref):
        record = workspace.registry.latest(recipe.lm.champion_name, status="champion")
        if record is None:
            record = load_lm_champion(ref, recipe.lm, workspace, recipe.max_length)[1]
    else:
        record = workspace.champion(ref)
    if record.kind != "causal_lm":
        raise ConfigError(
            f"champion: {record.id} is not a causal LM (kind {record.kind!r}), but this cycle recipe has task: "
            "causal_lm; name a "
            "causal LM (package:SmolLM2-135M-Instruct, or a registered one), or run a classification cycle "
            "(recipes/cycle.yaml, no task key)"
        )
    return record


def run_lm_cycle(
    recipe: LMCycleRecipe, registry: Registry, generations: int | None = None, console: Console | None = None
) -> list[dict[str, Any]]:
    """Run the recipe's generations (``generations`` overrides its count); one summary per generation.

    Summaries of generations finished by an earlier run are returned with ``skipped: True``.
    """
    workspace, console = Workspace(registry), console or Console()
    total = generations if generations is not None else recipe.generations
    if total < 1:
        raise ConfigError(f"--generations {total}: run at least one generation")
    bench = lm_benchmark(recipe)  # checks the domains are causal-LM ones before anything runs
    cycle = cycle_id(recipe)
    done = finished_generations(registry, cycle)
    name = recipe.lm.champion_name if is_source(recipe.champion) else parse_ref(recipe.champion)[0]
    summaries: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for generation in range(total):
        if generation in done:
            summary = {**done[generation].summary, "skipped": True}
            console.print(
                f"generation {generation}: finished in run {done[generation].id} ({outcome(summary)}); not redone",
                highlight=False,
            )
        else:
            champion = lm_champion(recipe, workspace, recipe.champion if not summaries and not done else name)
            summary = run_lm_generation(
                recipe, registry, bench, cycle, generation, champion, previous, console
            )
        summaries.append(summary)
        previous = summary
        if summary["promoted"] is None and recipe.on_no_promotion == "stop":
            console.print(
                f"generation {generation}: no candidate passed the LM gate; the cycle stops "
                "(set on_no_promotion: continue to go on from the same champion)",
                highlight=False,
            )
            break
    return summaries


def run_lm_generation(
    recipe: LMCycleRecipe,
    registry: Registry,
    bench: Benchmark,
    cycle: str,
    generation: int,
    champion: ModelRecord,
    previous: dict[str, Any] | None,
    console: Console,
) -> dict[str, Any]:
    """One LM generation from ``champion``, recorded as a ``cycle`` run; its summary."""
    workspace = Workspace(registry)
    body = {
        "cycle": cycle,
        "generation": generation,
        "task": "causal_lm",
        "recipe": recipe.model_dump(mode="json"),
    }
    with workspace.run(RUN_KIND, body) as run:
        console.print(f"[bold]Generation {generation}[/] from {champion.id}", highlight=False)
        small: dict[str, str] = {}
        if recipe.derive.enabled:
            if previous is not None and previous["champion_in"] == champion.id and previous.get("small"):
                small = dict(previous["small"])
                console.print(f"small LMs of {champion.id} reused from generation {previous['generation']}")
            else:
                files = write_derive_files(recipe, bench, run.dir / "derive-data")
                rows = run_lm_derive_recipe(recipe.derive_recipe(champion.id, files), registry)
                small = {row["domain"]: row["final"] for row in rows}
                print_small_lms(console, rows, champion.id)
        deployment: dict[str, Any] | None = None
        if recipe.deployment.enabled and small:
            seed, size = recipe.lm.data.seed, recipe.deployment.traffic_size
            traffic = {
                d: traffic_pairs(
                    private_pool(recipe, bench, d), recipe.derive.max_train, seed, size, generation
                )[0]
                for d in small
            }
            label = f"lm-cycle-{cycle[:8]}"
            deployment = deploy_lm(
                recipe.deployment,
                traffic,
                registry,
                label,
                generation,
                champion.id,
                small,
                recipe.seed + generation,
            )
            print_lm_traffic(console, deployment)
        collected = deployment["collected"]["dataset"] if deployment else None
        feedback = run_feedback(recipe.feedback_recipe(champion.id, generation, small, collected), registry)
        promoted = feedback["promoted"]
        summary = {
            "cycle": cycle,
            "task": "causal_lm",
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
            "strategies": [
                {k: row[k] for k in ("name", "model", "pgr_mean", "forgetting", "gate")}
                for row in feedback["strategies"]
            ],
        }
        run.summary = summary
    print_feedback(console, feedback, title=f"generation {generation}: candidate LMs from {champion.id}")
    console.print(f"generation {generation}: {outcome(summary)}", highlight=False)
    return summary
