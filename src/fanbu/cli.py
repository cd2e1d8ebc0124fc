"""The ``fanbu`` command line: one typer app, rich output, errors that say what to do."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import fanbu
from fanbu.config import dump_recipe, load_recipe
from fanbu.errors import ConfigError, FanbuError

app = typer.Typer(
    name="fanbu",
    help="Derive small domain models from a large one (脱胎) and feed the swarm back into it (反哺).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Built-in and user data sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Benchmarks: print a table and write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
rl_app = typer.Typer(help="Reinforcement-learning domains: environment variants, expert policies.",
                     no_args_is_help=True)
app.add_typer(rl_app, name="rl")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

HomeOpt = Annotated[
    Path,
    typer.Option("--home", envvar="FANBU_HOME", help="Workspace: registry database and artefacts."),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="FANBU_DB", help="SQLAlchemy URL of the registry (default: SQLite in --home)."),
]


def friendly(fn: F) -> F:
    """Print a FanbuError's message (no traceback) and exit with status 2.

    The message is printed literally (a ``[...]`` in it is not rich markup), with the password of the
    command's ``--db`` URL, and of any other ``scheme://user:password@`` in it, replaced by ``***``.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FanbuError as exc:
            from rich.markup import escape

            from fanbu.registry.engine import redact

            db = kwargs.get("db")
            message = redact(str(exc), db if isinstance(db, str) else None)
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _registry(home: Path, db: str | None):
    """The registry of ``home`` (or of ``db``); a bad or unreachable URL is a RegistryError whose message
    shows the URL with its password hidden."""
    from fanbu.registry import Registry

    return Registry.open(home, db)


@app.command()
@friendly
def version() -> None:
    """Print fanbu's version."""
    console.print(f"fanbu {fanbu.__version__}")


@app.command()
@friendly
def demo(
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. train.epochs=1")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="A demo recipe YAML file.")] = None,
    lm: Annotated[bool, typer.Option("--lm", help="The loop on language models: SmolLM2-135M-Instruct as large-lm:v0, "
                  "a small LM for one BBC category, served, fed back behind the LM gate (recipes/lm-demo.yaml).")] = False,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """The main job on the built-in default: train large v0 on the public slices, evaluate, register."""
    if lm:
        from fanbu.demo.lm import load_lm_demo, run_lm_demo

        with _registry(home, db) as registry:
            run_lm_demo(load_lm_demo(recipe, overrides or []), registry, console)
        return
    from fanbu.demo import DemoRecipe, run_demo

    resolved = load_recipe(DemoRecipe, recipe, overrides or [])
    with _registry(home, db) as registry:
        run_demo(resolved, registry, console)


@app.command()
@friendly
def derive(
    recipe: Annotated[Path, typer.Argument(help="A derive recipe YAML (see recipes/derive.yaml).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """脱胎: derive a small model per domain (finetune -> prune -> distill -> quantize ...), in parallel."""
    from fanbu.cycle.tables import print_small
    from fanbu.derive.lm import LMDeriveRecipe
    from fanbu.derive.pipeline import load_derive_recipe, run_any_derive

    resolved = load_derive_recipe(recipe, overrides or [])  # task: causal_lm picks the LM path
    with _registry(home, db) as registry:
        results = run_any_derive(resolved, registry)
    if isinstance(resolved, LMDeriveRecipe):
        for r in results:
            console.print(f"{r['domain']}: {r['final']} test ppl {r['test']['ppl']:.2f}, {r['params']:,} parameters",
                          highlight=False)
    else:
        print_small(console, results)


@app.command()
@friendly
def adapt(
    recipe: Annotated[str, typer.Argument(
        help="An adapt recipe YAML (see recipes/adapt.yaml); with --shots, the new DOMAIN's name.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. model=comp.quantize")] = None,
    shots: Annotated[int | None, typer.Option(
        "--shots", help="Few-shot: adapt --model to DOMAIN from this many labelled examples per class.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="With --shots: the model to adapt (registry id or name, package:NAME, directory).")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """A deployed small model keeps learning: fine-tune it on its domain's collected traffic (with replay of
    its own training slice) into the next version of the same name, int8 deployment included. With
    --shots K DOMAIN --model M: take M to a new domain from K labelled examples per class."""
    if shots is not None:
        _adapt_fewshot(recipe, shots, model, overrides or [], home, db)
        return
    if model is not None:
        raise typer.BadParameter("--model goes with --shots; an adapt recipe names its model itself", param_hint="--model")
    from fanbu.derive.adapt import AdaptConfig, run_adapt

    resolved = load_recipe(AdaptConfig, Path(recipe), overrides or [])
    with _registry(home, db) as registry:
        summary = run_adapt(resolved, registry)
    table = Table("domain", *summary["examples"], "replay", "val acc before", "val acc after", "seconds")
    accuracy = summary["validation_accuracy"]
    table.add_row(summary["domain"], *(str(n) for n in summary["examples"].values()), str(summary["replay"]),
                  f"{accuracy['before']:.3f}", f"{accuracy['after']:.3f}", f"{summary['seconds']:.0f}")
    console.print(table)
    console.print(f"{summary['model']} (from {summary['parent']} and dataset {summary['collected']})",
                  highlight=False, soft_wrap=True)


def _adapt_fewshot(domain: str, shots: int, model: str | None, overrides: list[str], home: Path,
                   db: str | None) -> None:
    from fanbu.meta.fewshot import FewShotConfig, run_fewshot

    if model is None:
        raise typer.BadParameter("--shots needs --model: the registered model to adapt (e.g. large, "
                                 "comp.distill:v0, package:all-MiniLM-L6-v2)", param_hint="--model")
    resolved = load_recipe(FewShotConfig, None, overrides, base={"model": model, "domain": domain, "shots": shots})
    with _registry(home, db) as registry:
        summary = run_fewshot(resolved, registry)
    table = Table("domain", "shots", "examples", "val acc", "test acc", "seconds")
    table.add_row(summary["domain"], str(summary["shots"]), str(summary["examples"]),
                  f"{summary['validation_accuracy']:.3f}", f"{summary['test_accuracy']:.3f}", f"{summary['seconds']:.0f}")
    console.print(table)
    console.print(f"{summary['model']} (from {summary['parent']})", highlight=False, soft_wrap=True)


@app.command()
@friendly
def feedback(
    recipe: Annotated[Path, typer.Argument(help="A feedback recipe YAML (see recipes/feedback.yaml).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """反哺: turn the swarm into candidate large models, gate each, promote the best that passes."""
    from fanbu.cycle.tables import print_feedback
    from fanbu.feedback.pipeline import run_feedback
    from fanbu.feedback.recipe import FeedbackRecipe

    resolved = load_recipe(FeedbackRecipe, recipe, overrides or [])
    with _registry(home, db) as registry:
        summary = run_feedback(resolved, registry)
    print_feedback(console, summary)


@app.command()
@friendly
def cycle(
    recipe: Annotated[Path, typer.Argument(
        help="A cycle recipe YAML (recipes/cycle.yaml, or recipes/lm-cycle.yaml for causal LMs).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    generations: Annotated[int | None, typer.Option("--generations", "-n", min=1,
                                                    help="Generations in all (default: the recipe's).")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Derive -> feed back -> gate, generation after generation; finished generations are not redone."""
    from fanbu.cycle.dispatch import run_any_cycle
    from fanbu.cycle.recipe import load_cycle_recipe

    resolved = load_cycle_recipe(recipe, overrides or [])  # task: causal_lm picks the LM cycle
    with _registry(home, db) as registry:
        summaries = run_any_cycle(resolved, registry, generations, console)
    last = summaries[-1]
    console.print(f"{len(summaries)} generation(s); champion: {last['champion_out']}", highlight=False)


@app.command()
@friendly
def hierarchy(
    recipe: Annotated[Path, typer.Argument(help="A hierarchy recipe YAML (see recipes/hierarchy.yaml).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. max_train=200")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Adapters on your domain tree: train them top-down, register the stack, attach each new domain under the
    nearest group and register its starting model (the trunk with the group's adapters merged in)."""
    from fanbu.hierarchy.run import HierarchyRunRecipe, run_hierarchy
    from fanbu.registry.workspace import Workspace

    resolved = load_recipe(HierarchyRunRecipe, recipe, overrides or [])
    with _registry(home, db) as registry:
        summary = run_hierarchy(resolved, Workspace(registry),
                                log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    if summary["note"]:
        console.print(f"note: {summary['note']}", highlight=False, soft_wrap=True)
    table = Table("leaf", "group", "val acc", "test acc", title=f"adapter stack {summary['stack']}")
    for leaf, row in summary["leaves"].items():
        table.add_row(leaf, row["group"], f"{row['validation']:.3f}", f"{row['test']:.3f}")
    console.print(table)
    for domain, found in summary["attachments"].items():
        best = max(found["similarities"].values())
        console.print(f"{domain} -> {found['group']} ({found['how']}, best similarity {best:.3f}): {found['model']}",
                      highlight=False, soft_wrap=True)
        console.print(f"derive it: set teacher: {found['model']} in a derive recipe", highlight=False, soft_wrap=True)


@app.command()
@friendly
def report(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The HTML file (default: HOME/report.html).")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Write one self-contained HTML report (lineage, accuracy, size, feedback runs) from the registry."""
    from fanbu.report import write_report

    with _registry(home, db) as registry:
        path = write_report(registry, out if out is not None else home / "report.html")
    console.print(f"report written to {path}", highlight=False, soft_wrap=True)


@app.command()
@friendly
def federate(
    recipe: Annotated[
        Path | None, typer.Argument(help="A federated recipe YAML (see recipes/federated.yaml); not with --collect.")
    ] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    app_dir: Annotated[Path | None, typer.Option("--app", help="Write a Flower app directory for a real "
                                                 "deployment (flwr run) instead of simulating.")] = None,
    collect_dir: Annotated[Path | None, typer.Option("--collect", help="Register the results of a finished "
                                                     "deployment of this app directory, through the gate.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's logs.")] = False,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """反哺 on Flower: the champion and the domains' clients federate (simulated), gate, register."""
    from fanbu.federated.recipe import FederatedRecipe

    if (recipe is None) == (collect_dir is None):
        raise ConfigError("give a recipe (to simulate, or with --app to deploy) or --collect APP_DIR, not both")
    with _registry(home, db) as registry:
        if collect_dir is not None:
            from fanbu.federated.run import collect_deployment

            summary = collect_deployment(collect_dir, registry)
        else:
            assert recipe is not None
            resolved = load_recipe(FederatedRecipe, recipe, overrides or [])
            if app_dir is not None:
                from fanbu.federated.run import write_deployment

                settings = write_deployment(resolved, registry, app_dir)
                console.print(f"Flower app written to {app_dir}; outputs will go to {settings.work_dir}. Start "
                              "flower-superlink and one flower-supernode per client, then: flwr run "
                              f"{app_dir} <superlink connection>; then register the results: fanbu federate "
                              f"--collect {app_dir} (see the README)", highlight=False, soft_wrap=True)
                return
            from fanbu.federated.run import run_federated

            summary = run_federated(resolved, registry, verbose=verbose)
    table = Table("round", "validation mean acc", "seconds")
    for row in summary["rounds"]:
        table.add_row(str(row["round"]), f"{row['val.mean_acc']:.3f}", f"{row['seconds']:.0f}")
    console.print(table)
    if summary["clients_before"] is not None:
        console.print(f"clients' mean validation accuracy {summary['clients_before']:.3f} -> "
                      f"{summary['clients_after']:.3f}", highlight=False)
    if summary["privacy"]:
        console.print(f"differential privacy: epsilon {summary['privacy']['epsilon']:.2f} at delta "
                      f"{summary['privacy']['delta']}", highlight=False)
    console.print(f"{summary['candidate']}: {summary['gate']['status']}: {summary['gate']['reason']}",
                  highlight=False, soft_wrap=True)


def _print_catalog(catalog: Any, what: str) -> None:
    """A table of a :class:`fanbu.registration.Catalog`: name, summary, capabilities, reference."""
    table = Table(what, "summary", "capabilities", "reference")
    for entry in catalog.values():
        table.add_row(entry.name, entry.summary, ", ".join(sorted(entry.capabilities)), entry.reference)
    console.print(table)


@app.command()
@friendly
def stages() -> None:
    """List the registered derive stages with their references."""
    from fanbu.derive.stages import STAGES

    _print_catalog(STAGES, "stage")


@app.command()
@friendly
def strategies() -> None:
    """List the registered feedback strategies (classifiers, then causal LMs) with their references."""
    from fanbu.feedback import STRATEGIES
    from fanbu.feedback.lm import LM_METHODS

    _print_catalog(STRATEGIES, "strategy")
    _print_catalog(LM_METHODS, "LM feedback method")


@bench_app.command("derive")
@friendly
def bench_derive(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-derive.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Capped data; finishes within 20 minutes on 2 cores.")] = False,
    domains: Annotated[list[str] | None, typer.Option("--domain", help="Only these domains (repeatable).")] = None,
    home: Annotated[Path | None, typer.Option(help="Keep the bench's registry and models here.")] = None,
    lm: Annotated[bool, typer.Option("--lm", help="Also SmolLM2-135M pruned to 10 layers and distilled per BBC "
                                                  "category (slower).")] = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Run the bench for seeds 0..N-1 (data split and "
                                       "training); report the mean and a 90% t-interval over seeds.")] = 1,
    work: Annotated[Path | None, typer.Option(help="Keep each finished seed here; a rerun with the same settings "
                                              "and code starts at the first seed not finished.")] = None,
) -> None:
    """Students vs teachers, from-scratch (self-trained) students and TF-IDF on the 20 Newsgroups domains."""
    from fanbu.bench.derive import run_bench

    run_bench(quick, out, console, home=home, domains=domains, lm=lm, seeds=seeds, work=work)
    console.print(f"results written to {out}")


@bench_app.command("feedback")
@friendly
def bench_feedback(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-feedback.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Three domains, capped data, 64 tokens.")] = False,
    work: Annotated[
        Path | None,
        typer.Option(help="Keep the models and finished scores here; a rerun reuses what the same settings "
                     "and code made."),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(help="The first draw of the setup (slices, samples, large v0's heads): another seed, another "
                     "draw; with --seeds N the draws are seeds SEED..SEED+N-1."),
    ] = 0,
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", min=1, help="Run N draws (seeds --seed..--seed+N-1); every headline figure is the "
                     "mean over draws with a 90% t-interval, the target is read on the means and the best strategy "
                     "chosen on the mean gate scores. Default 3; with --quick 1, since one quick draw takes about "
                     "18 minutes on 2 cores and three would exceed its 20-minute target."),
    ] = None,
) -> None:
    """Every feedback strategy vs naive sequential fine-tuning and uniform averaging: PGR and forgetting."""
    from fanbu.bench.feedback import run_bench as run_feedback_bench

    run_feedback_bench(quick, out, console, work=work, seed=seed, seeds=seeds)
    console.print(f"results written to {out}")


@bench_app.command("federated")
@friendly
def bench_federated(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-federated.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Three domains, capped data, two rounds.")] = False,
    work: Annotated[
        Path | None,
        typer.Option(help="Keep finished parts here; a rerun with the same --work skips those made with the "
                     "same settings and code."),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option("--seeds", min=1, help="Run the bench for seeds 0..N-1 (training, the Dirichlet split, the "
                     "attackers); report the mean and a 90% t-interval over seeds, targets judged on the mean."),
    ] = 1,
) -> None:
    """Federated vs centralised feedback, FedMKT's clients against local training, every robust rule x
    attack, 100 clients."""
    from fanbu.bench.federated import run_bench as run_federated_bench

    run_federated_bench(quick, out, console, work=work, seeds=seeds)
    console.print(f"results written to {out}")


@bench_app.command("serve")
@friendly
def bench_serve(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-serve.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Capped data and load; one domain.")] = False,
    domain: Annotated[str, typer.Option("--domain", help="The 20 Newsgroups domain to serve.")] = "rec",
    home: Annotated[Path | None, typer.Option(help="Keep the bench's registry, models and logs here.")] = None,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            help="Run the serving phases once per seed (seed s samples and orders the load's validation "
            "texts); each figure is the mean over the seeds with a 90% Student-t interval.",
        ),
    ] = 1,
) -> None:
    """Small int8 vs large model behind a real server: throughput, latency, cascade, kill -9."""
    from fanbu.bench.serve import run_bench as run_serve_bench

    run_serve_bench(quick, out, console, home=home, domain=domain, seeds=seeds)
    console.print(f"results written to {out}")


@bench_app.command("loop")
@friendly
def bench_loop(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-loop.json"),
    quick: Annotated[bool, typer.Option("--quick", help="64 tokens, capped data, 2 generations; target 30 minutes "
                                        "on 2 cores.")] = False,
    work: Annotated[Path | None, typer.Option(help="Keep large v0, each finished draw and its registry here; a "
                                              "rerun reuses what the same plan and code made.")] = None,
    seed: Annotated[int, typer.Option(help="The first draw (slices, traffic, training); with --seeds N the draws "
                                      "are seeds SEED..SEED+N-1.")] = 0,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Run N draws of the whole loop; every headline "
                                              "figure is the mean with a 90% t-interval, targets read on the means. "
                                              "Default 1 with --quick, else 2.")] = None,
    generations: Annotated[int | None, typer.Option("--generations", min=2, help="Generations per draw (default 2 "
                                                    "with --quick, else 3).")] = None,
) -> None:
    """The whole loop with the small models as the swarm: derive, serve, collect, adapt, feed back through
    every mechanism, gate; PGR against the small teachers, bytes moved, the full-size swarm compared."""
    from fanbu.bench.loop import run_bench as run_loop_bench

    run_loop_bench(quick, out, console, seed=seed, seeds=seeds, generations=generations, work=work)
    console.print(f"results written to {out}")


@bench_app.command("reliability")
@friendly
def bench_reliability(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path(
        "bench-reliability.json"),
    quick: Annotated[bool, typer.Option("--quick", help="2,000 fuzzed requests, 5 kills per command, 2 minutes "
                                        "of load; target 20 minutes on 2 cores.")] = False,
    work: Annotated[Path | None, typer.Option(help="Keep the registry under test, the logs and the recipes "
                                              "here (default: a temporary directory).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the fuzzers, the kill moments and the load.")] = 0,
) -> None:
    """Hostile input and faults: fuzz the API, loaders and recipes; bad requests next to good ones; kill -9
    fanbu serve, derive and feedback at random moments, rerun, ask fanbu doctor; sustained load at 80%."""
    from fanbu.bench.reliability import run_bench as run_reliability_bench
    from fanbu.recipes import validate_file

    run_reliability_bench(quick, out, console, seed=seed, work=work, validate_recipe=validate_file)
    console.print(f"results written to {out}")


@bench_app.command("rl")
@friendly
def bench_rl(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-rl.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Fewer PPO steps, Reptile iterations and adaptation "
                                        "steps; target 30 minutes on 2 cores.")] = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Run every family for seeds 0..N-1; every row is "
                                       "the mean over seeds with a 90% t-interval, targets read on the means.")] = 3,
    families: Annotated[list[str] | None, typer.Option("--family", help="Only these families (repeatable): "
                                                       "cartpole, acrobot.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="key=value override of every family's rl recipe "
                                                   "(repeatable), e.g. --set ppo.total_steps=20000.")] = None,
    home: Annotated[Path | None, typer.Option(help="Keep the bench's registry and policies here.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Draws (family x seed) run at a time, "
                                                "each in a process on one thread (default: one per core).")] = None,
) -> None:
    """RL swarm: PPO experts per environment variant, the general policy by distillation vs multi-variant PPO
    and uniform averaging (gated on returns), and steps to 90% of an expert on held-out variants from a
    Reptile meta-init, the distilled policy and scratch."""
    from fanbu.bench.rl import run_bench as run_rl_bench

    run_rl_bench(quick, out, console, seeds=seeds, families=families, overrides=sets, home=home, workers=workers)
    console.print(f"results written to {out}")


@bench_app.command("unlabeled")
@friendly
def bench_unlabeled(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-unlabeled.json"),
    quick: Annotated[bool, typer.Option("--quick", help="400 source posts per class, 128 tokens; target 30 minutes "
                                        "on 2 cores for the whole bench.")] = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Run seeds 0..N-1 (data carving, initialisation, "
                                       "batch order); every row is the mean with a 90% t-interval.")] = 3,
    work: Annotated[Path | None, typer.Option(help="Keep each finished seed here; a rerun with the same recipe "
                                              "and code reads it back.")] = None,
    sections: Annotated[str, typer.Option("--sections", help="Comma-separated sections: da, augment, ssl.")] = "da,augment,ssl",
) -> None:
    """Learning without labels. Section da: 20 Newsgroups -> BBC News domain adaptation (source-only, DANN,
    CORAL, MMD, self-training, target-supervised upper bound), gap closed and per-class F1. Section augment:
    LM-generated (SmolLM2, expert-filtered) and conditional-GAN augmentation of head training and distillation
    with at most 100 texts, at equal steps. Section ssl: each domain's model fine-tuned on 100 labels and on its
    whole slice, with and without self-supervised pretraining (masked LM, SimCSE) on its unlabeled text."""
    from fanbu.bench.unlabeled import run_bench as run_unlabeled_bench

    chosen = tuple(s.strip() for s in sections.split(",") if s.strip())
    run_unlabeled_bench(quick, out, console, seeds=seeds, work=work, sections=chosen)
    console.print(f"results written to {out}")


@bench_app.command("lm")
@friendly
def bench_lm(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-lm.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Fewer BBC domains, articles and steps; target 30 "
                                        "minutes on 2 cores.")] = False,
    sections: Annotated[list[str] | None, typer.Option("--section", help="Only these sections (repeatable): "
                                                       "derive, feedback, serve.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Draws (derive and feedback seeded 0..N-1); every "
                                              "target is then a mean with its 90% interval. Default: one draw "
                                              "at the presets' seeds.")] = None,
) -> None:
    """The causal-LM loop on SmolLM2-135M and BBC News: derive (students at 0.5 and 0.25 of the parameters,
    scratch, tokens/s), feedback (LoRA merges, multi-teacher KD, sequential; PGR in log-perplexity) and serve
    (time to first token and tokens/s at concurrency 1 and 4, streaming, the cascade)."""
    from fanbu.bench.lm.run import SECTIONS, run_bench

    run_bench(quick, out, console, tuple(sections) if sections else SECTIONS, seeds)
    console.print(f"results written to {out}")


@bench_app.command("structure")
@friendly
def bench_structure(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path(
        "bench-structure.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Six 20 Newsgroups leaves, capped slices; target 30 "
                                        "minutes on 2 cores.")] = False,
    sections: Annotated[list[str] | None, typer.Option("--section", help="Only these sections (repeatable): "
                                                       "hierarchy, causal, merge.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="section.key=value override (repeatable), e.g. "
                                                   "--set hierarchy.seeds=5.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Draws of every section (default: each section's "
                                              "preset; quick: hierarchy 3, causal 1, merge 3).")] = None,
) -> None:
    """Hierarchical transfer on the 20 Newsgroups tree (flat, hierarchical, group alone at 8 and 32 labels per
    class), causal-rule transfer (a planted spurious token; feedback without and with invariance) and merging a
    swarm back flat or by level."""
    from fanbu.bench.structure.run import SECTIONS, run_bench

    run_bench(quick, out, console, tuple(sections) if sections else SECTIONS, sets or [], seeds)
    console.print(f"results written to {out}")


@rl_app.command("train-experts")
@friendly
def rl_train_experts(
    recipe: Annotated[Path, typer.Argument(help="An rl recipe YAML (see recipes/rl.yaml).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. ppo.total_steps=20000")]
    = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """One small PPO expert policy per training variant of the recipe's family, scored and registered."""
    from fanbu.registry.workspace import Workspace
    from fanbu.rl.recipe import RLRecipe
    from fanbu.rl.run import run_train_experts

    resolved = load_recipe(RLRecipe, recipe, overrides or [])
    with _registry(home, db) as registry:
        rows = run_train_experts(resolved, Workspace(registry))
    table = Table("variant", "model", "return", "random", "env steps")
    for row in rows:
        table.add_row(row["variant"], row["id"], f"{row['return']:.1f}", f"{row['random_return']:.1f}",
                      str(row["env_steps"]))
    console.print(table)


@rl_app.command("feedback")
@friendly
def rl_feedback(
    recipe: Annotated[Path, typer.Argument(help="An rl recipe YAML (see recipes/rl.yaml).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """反哺 for policies: distil and average the registered experts into candidate general policies, gate them
    on returns against the champion, promote the best that passes."""
    from fanbu.registry.workspace import Workspace
    from fanbu.rl.feedback import run_rl_feedback
    from fanbu.rl.recipe import RLRecipe

    resolved = load_recipe(RLRecipe, recipe, overrides or [])
    with _registry(home, db) as registry:
        summary = run_rl_feedback(resolved, Workspace(registry))
    table = Table("candidate", "model", "status", "gate mean return", "reason")
    for method, decision in summary["decisions"].items():
        table.add_row(method, decision["id"], decision["status"], f"{decision['gate_mean']:.1f}", decision["reason"])
    console.print(table)


@rl_app.command("adapt")
@friendly
def rl_adapt(
    recipe: Annotated[Path, typer.Argument(help="An rl recipe YAML (see recipes/rl.yaml).")],
    variant: Annotated[str, typer.Option("--variant", help="The variant (industry) to adapt to, e.g. a held-out one.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The policy to start from (default: the champion "
                                              "of <family>.general).")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Fine-tune a policy to one variant with PPO (adaptation.max_steps steps); registered as <variant>.adapted."""
    from fanbu.registry.workspace import Workspace
    from fanbu.rl.recipe import RLRecipe
    from fanbu.rl.run import run_rl_adapt

    resolved = load_recipe(RLRecipe, recipe, overrides or [])
    with _registry(home, db) as registry:
        summary = run_rl_adapt(resolved, Workspace(registry), variant, model)
    console.print(f"{summary['model']} (from {summary['from']}): test return {summary['return_before']:.1f} -> "
                  f"{summary['return_after']:.1f} in {summary['env_steps']} environment steps", highlight=False)


@bench_app.command("adapt")
@friendly
def bench_adapt(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench-adapt.json"),
    quick: Annotated[bool, typer.Option("--quick", help="Capped texts (48 train, 40 test per label), 128 tokens, "
                                        "fewer meta-iterations; target 30 minutes on 2 cores.")] = False,
    draws: Annotated[int | None, typer.Option("--draws", "--seeds", min=1, help="Draws of the k examples per "
                                              "(task, k) cell (default 5); each cell is the mean with a 90% "
                                              "t-interval.")] = None,
    work: Annotated[Path | None, typer.Option(help="Keep the cached features, meta-learned models and finished "
                                              "settings here; a rerun reuses what the same settings and code "
                                              "made.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="key=value override of the bench settings "
                                                   "(repeatable), e.g. --set fomaml.iterations=100.")] = None,
) -> None:
    """Few-shot adaptation learned from the swarm: FOMAML and Reptile meta-inits and a meta decision forest
    against v0-init fine-tuning, scratch, logistic regression and a random forest, leave-one-domain-out
    over the feedback domains and on the held-out tasks, k in 4, 8, 16, 32 per class."""
    from fanbu.bench.adapt import run_bench as run_adapt_bench

    run_adapt_bench(quick, out, console, draws=draws, work=work, overrides=sets)
    console.print(f"results written to {out}")


def _demo_in(home: Path, console: Console) -> dict:
    """``fanbu demo --home HOME`` on the built-in default; its summary (for ``fanbu bench all``)."""
    from fanbu.demo import DemoRecipe, run_demo

    with _registry(home, None) as registry:
        return run_demo(load_recipe(DemoRecipe, None, []), registry, console)


@bench_app.command("all")
@friendly
def bench_all(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Write <bench>.json, demo.json, environment.json and "
                                          "suite.json here.")] = Path("bench-results"),
    quick: Annotated[bool, typer.Option("--quick", help="Every bench's quick settings.")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="--seeds for every bench that takes it "
                                              "(derive, feedback, federated, serve, loop, rl, unlabeled); "
                                              "default: each bench's own.")] = None,
    lm: Annotated[bool, typer.Option("--lm", help="Also the derive bench's causal-LM part (slower).")] = False,
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="Also time `fanbu demo` on a fresh registry "
                                       "under --out-dir.")] = True,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this bench (repeat for more; "
                                                   "`demo` for the demo), in the suite's order.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Keep what an earlier run into --out-dir finished with "
                                         "the same command and code; a stopped bench starts from its kept "
                                         "parts (--out-dir/work).")] = False,
) -> None:
    """Every bench in turn (derive, feedback, federated, serve, loop, reliability, rl, unlabeled, adapt, lm,
    structure), then the demo timed; a failure is recorded and the others still run; exits 1 if any failed.
    `fanbu bench results` renders the directory."""
    from fanbu.bench.suite import SuiteSettings, run_suite
    from fanbu.recipes import validate_file

    settings = SuiteSettings(quick=quick, out_dir=out_dir, seeds=seeds, lm=lm, demo=demo, validate_recipe=validate_file,
                             only=tuple(only) if only else None, resume=resume)
    try:
        record = run_suite(settings, console, demo=_demo_in)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    table = Table("bench", "status", "seconds", "error")
    for name in record["order"]:
        entry = record["benches"][name]
        table.add_row(name, entry["status"], f"{entry['seconds']:.0f}", entry.get("error", ""))
    console.print(table)
    console.print(f"results in {out_dir}; render them with: fanbu bench results {out_dir} --out RESULTS.md",
                  highlight=False)
    if record["failed"]:
        err_console.print(f"[bold red]failed:[/] {', '.join(record['failed'])}", highlight=False)
        raise typer.Exit(1)


@bench_app.command("results")
@friendly
def bench_results(
    results_dir: Annotated[Path, typer.Argument(help="The --out-dir of `fanbu bench all`.")] = Path("bench-results"),
    out: Annotated[Path, typer.Option("--out", help="The markdown file to write.")] = Path("RESULTS.md"),
    readme: Annotated[Path | None, typer.Option(
        "--readme", help="Also rewrite the block between <!-- results:begin --> and <!-- results:end --> in this "
                         "file with every target's value, interval, bar and met.")] = None,
) -> None:
    """Render the JSON files of `fanbu bench all` as one markdown file: every table headed by its command."""
    from fanbu.bench.results import write_readme_block, write_results

    if not results_dir.is_dir():
        raise ConfigError(f"{results_dir} is not a directory: run `fanbu bench all --quick --out-dir {results_dir}` "
                          "first")
    if readme is not None and not readme.is_file():
        raise ConfigError(f"--readme {readme} is not a file: name the README that holds the results block")
    write_results(results_dir, out)
    console.print(f"results written to {out}")
    if readme is not None:
        try:
            relative = os.path.relpath(out, readme.parent)
            write_readme_block(results_dir, readme, relative)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        console.print(f"results block rewritten in {readme}")


@app.command()
@friendly
def serve(
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. port=8080")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A serve config YAML.")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Serve registered models and cascades over HTTP (token auth, loopback); log every prediction."""
    from fanbu.serve import ServeConfig
    from fanbu.serve import serve as run_server

    resolved = load_recipe(ServeConfig, config, overrides or [])
    with _registry(home, db) as registry:
        run_server(resolved, registry, console)


@app.command()
@friendly
def collect(
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. quota=500")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A curation config YAML.")] = None,
    lm: Annotated[bool, typer.Option("--lm", help="Curate logged generations, ratings and corrections into a "
                                     "prompt-completion dataset for causal LMs.")] = False,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Curate the serving logs into a versioned, fingerprinted dataset in the registry."""
    from fanbu.collect import CurateConfig, LMCurateConfig, curate, curate_lm

    if lm:
        lm_config = load_recipe(LMCurateConfig, config, overrides or [])
        with _registry(home, db) as registry:
            lm_record, lm_counts = curate_lm(registry, lm_config)
        tiers = Table("tier", "examples")
        for tier, n in lm_counts["tiers"].items():
            tiers.add_row(tier, str(n))
        console.print(tiers)
        dropped = ", ".join(f"{k} {v}" for k, v in lm_counts["dropped"].items() if v) or "none"
        console.print(f"dataset {lm_record.id} ({lm_record.n_rows} prompt-completion pairs of "
                      f"{lm_counts['logged']} logged) at {lm_record.source}; dropped: {dropped}", highlight=False)
        return
    resolved = load_recipe(CurateConfig, config, overrides or [])
    with _registry(home, db) as registry:
        record, counts = curate(registry, resolved)
    table = Table("domain", "human", "pseudo", "hard", "unlabeled")
    for name, row in counts["domains"].items():
        table.add_row(name, *(str(row[k]) for k in ("human", "pseudo", "hard", "unlabeled")))
    console.print(table)
    console.print(f"dataset {record.id} ({record.n_rows} labelled rows) at {record.source}; "
                  f"{counts['skipped_hash_only']} hash-only logs skipped", highlight=False)


@app.command()
@friendly
def lineage(
    json_out: Annotated[Path | None, typer.Option("--json", help="Also export the lineage as JSON here.")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Print the model lineage tree; optionally export it as JSON."""
    from fanbu.io import atomic_write_json
    from fanbu.registry.lineage import lineage_json, lineage_tree

    with _registry(home, db) as registry:
        console.print(lineage_tree(registry))
        if json_out is not None:
            atomic_write_json(json_out, lineage_json(registry))
            console.print(f"lineage written to {json_out}")


@app.command()
@friendly
def models(
    name: Annotated[str | None, typer.Option(help="Only models of this name.")] = None,
    status: Annotated[str | None, typer.Option(help="Only models with this status.")] = None,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """List registered models."""
    with _registry(home, db) as registry:
        table = Table("id", "kind", "status", "relation", "parents", "path")
        for record in registry.list_models(name=name, status=status):
            table.add_row(record.id, record.kind, record.status, record.relation or "",
                          ", ".join(record.parents), record.path)
        console.print(table)


@app.command()
@friendly
def doctor(
    repair: Annotated[bool, typer.Option("--repair", help="Move what cannot be trusted into "
                                         "HOME/quarantine/<time>/ and mark its models rejected; "
                                         "nothing is deleted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    grace: Annotated[float, typer.Option(min=0, help="Seconds during which a new unregistered or "
                                         "half-written directory counts as a save at work.")] = 3600.0,
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Check that the registry and the artefacts on disk agree; exit 1 while problems remain."""
    from fanbu.registry.doctor import diagnose, report_table
    from fanbu.registry.doctor import repair as quarantine

    with _registry(home, db) as registry:
        report, folder = diagnose(registry, grace=grace), None
        if repair:
            folder = quarantine(report, registry)
            report = diagnose(registry, grace=grace) if folder is not None else report
    if as_json:
        data = {**report.to_json(), "quarantine": str(folder) if folder else None}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        if folder is not None:
            console.print(f"quarantined into {folder} (see its doctor.json)", highlight=False, soft_wrap=True)
        for note in report.notes:
            console.print(f"note: {note}", style="dim", markup=False, highlight=False, soft_wrap=True)
        healthy = "[green]healthy:[/] the registry and the artefacts on disk agree"
        console.print(report_table(report) if report.problems else healthy)
    if not report.healthy:
        raise typer.Exit(1)


@app.command()
@friendly
def rollback(
    name: Annotated[str, typer.Option(help="The model name whose champion is rolled back.")] = "large",
    home: HomeOpt = Path(".fanbu"),
    db: DbOpt = None,
) -> None:
    """Restore the previous champion: the current one is marked rejected, the one it replaced is champion."""
    from fanbu.feedback.gate.promotion import rollback as roll_back

    with _registry(home, db) as registry:
        result = roll_back(registry, name)
    console.print(f"rolled back {name}: {result.restored.id} is champion again; {result.retired.id} is rejected")


@app.command()
@friendly
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML to check.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    kind: Annotated[str | None, typer.Option(help="Recipe kind; default: from the file name.")] = None,
) -> None:
    """Validate a recipe without running anything; print it with every default filled in."""
    from fanbu.recipes import validate_file

    console.print(dump_recipe(validate_file(recipe, kind, overrides or [])), highlight=False)


@data_app.command("list")
@friendly
def data_list() -> None:
    """List the built-in data sources (read from installed packages)."""
    from fanbu.data.builtin import BUILTIN_SOURCES

    table = Table("name", "description")
    for name, description in BUILTIN_SOURCES.items():
        table.add_row(name, description)
    console.print(table)


@data_app.command("show")
@friendly
def data_show(
    name: Annotated[str, typer.Argument(help="A built-in source name (see `fanbu data list`).")],
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the domains of a built-in source: split sizes, labels and fingerprints."""
    from fanbu.data.builtin import load_builtin

    domains = load_builtin(name, seed=seed)
    rows = [
        {"name": d.name, "task": d.task, "labels": list(d.label_names), "train": len(d.train),
         "validation": len(d.validation), "test": len(d.test), "fingerprints": d.fingerprints()}
        for d in domains
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("domain", "task", "labels", "train", "validation", "test", "train sha256")
    for row in rows:
        table.add_row(row["name"], row["task"], str(len(row["labels"])), str(row["train"]),
                      str(row["validation"]), str(row["test"]), row["fingerprints"]["train"][:12])
    console.print(table)


def main() -> None:  # pragma: no cover - console-script shim for `python -m fanbu`
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # Flower's usage telemetry: fanbu calls no one
    app()
