"""``fanbu bench rl``: the RL swarm, its general policies and fast adaptation, on CartPole and Acrobot variants.

:mod:`fanbu.bench.rl.plan` holds the recipes, :mod:`fanbu.bench.rl.draw` one family and seed,
:mod:`fanbu.bench.rl.report` the rows, targets and table.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from fanbu.bench.rl.draw import run_draw
from fanbu.bench.rl.plan import FAMILIES, QUICK_SECONDS, bench_recipe
from fanbu.bench.rl.report import headline, print_report, summarise, targets
from fanbu.bench.stats import INTERVAL_METHOD
from fanbu.errors import ConfigError
from fanbu.execute.local import LocalExecutor, cpu_count
from fanbu.io import atomic_write_json
from fanbu.registry.workspace import Workspace
from fanbu.rl.recipe import RLRecipe

__all__ = ["run_bench"]


DEFAULT_SEEDS = 3


def _command(quick: bool, out: Path, seeds: int, families: list[str], overrides: list[str]) -> str:
    parts = ["fanbu bench rl", " --quick" if quick else "", f" --seeds {seeds}" if seeds != DEFAULT_SEEDS else ""]
    parts += [f" --family {f}" for f in families if list(families) != list(FAMILIES)]
    parts += [f" --set {o}" for o in overrides]
    return "".join(parts) + f" --out {out}"


@dataclass(frozen=True)
class DrawItem:
    """One draw to run, in this process or a worker: its recipe, seed and the shared registry home."""

    recipe: RLRecipe
    seed: int
    home: str
    quiet: bool = False


def run_item(item: DrawItem) -> dict[str, Any]:
    """Run one draw, on one torch thread, against the registry at ``item.home`` (SQLite takes several
    writing processes)."""
    torch.set_num_threads(1)  # tiny networks: one thread is the fastest, and a worker gets one core
    workspace = Workspace.open(item.home)
    try:
        return run_draw(item.recipe, item.seed, workspace, Console(quiet=item.quiet))
    finally:
        workspace.registry.close()


def run_bench(quick: bool, out: Path, console: Console, *, seeds: int = DEFAULT_SEEDS, families: list[str] | None = None,
              overrides: list[str] | None = None, home: Path | None = None,
              workers: int | None = None) -> dict[str, Any]:
    """Run every family for seeds 0..``seeds``-1, print the tables and write the JSON report to ``out``.

    ``workers``: draws (a family and a seed) run at a time, each in its own process on one torch thread
    (default: one per usable core; 1 runs them here, in order). Every draw seeds its own runs, so the
    numbers do not depend on the number of workers.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: run at least one seed")
    families = list(families or FAMILIES)
    overrides = list(overrides or [])
    recipes = {f: bench_recipe(f, quick, overrides) for f in families}  # every recipe checked before any run
    workers = min(workers or cpu_count(), len(families) * seeds)
    if workers < 1:
        raise ConfigError(f"--workers {workers}: use at least one")
    before = torch.get_num_threads()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-rl-") as tmp:
        root = str(home or Path(tmp))
        Workspace.open(root).registry.close()  # the schema exists before workers write to it
        items = [DrawItem(recipe, seed, root, console.quiet) for recipe in recipes.values() for seed in range(seeds)]
        names = [f"{recipe.family_spec().name} seed {seed}" for recipe in recipes.values() for seed in range(seeds)]
        try:
            draws = LocalExecutor(workers).map(run_item, items, names)
        finally:
            torch.set_num_threads(before)
    seconds = time.perf_counter() - started
    max_steps = {f: r.adaptation.max_steps for f, r in recipes.items()}
    rows = summarise(draws, max_steps)
    report = {
        "bench": "rl",
        "quick": quick,
        "command": _command(quick, out, seeds, families, overrides),
        "seeds": list(range(seeds)),
        "mean": headline(rows),
        **rows,
        "target": targets(rows, seconds, quick, QUICK_SECONDS, draws, max_steps),
        "interval_method": INTERVAL_METHOD,
        "returns": "greedy mean return over the recipe's `episodes` test episodes per variant and seed; the gate "
        "and adaptation's stopping test read separate gate episodes",
        "ratio_to_expert": "(return - random policy's) / (expert's - random policy's), same variant and episodes",
        "censoring": "an adaptation run that does not reach the target counts as adaptation.max_steps",
        "draws": draws,
        "recipes": {f: r.model_dump(mode="json") for f, r in recipes.items()},
        "workers": workers,
        "threads_per_draw": 1,
        "seconds": seconds,
    }
    atomic_write_json(out, report)
    print_report(report, console)
    return report
