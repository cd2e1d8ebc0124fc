"""``fanbu bench loop``: run the draws, write the JSON atomically, print the tables and the targets."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.loop.generation import LargeV0, register_large_v0, run_generations
from fanbu.bench.loop.plan import DEFAULT, LoopPlan, plan_for
from fanbu.bench.loop.summary import figures, over_draws, pgr_delta_interval, targets
from fanbu.bench.loop.table import print_generation, print_mechanisms, print_over_draws, print_targets
from fanbu.bench.stats import INTERVAL_METHOD
from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.io import atomic_write_json

#: Builds a draw's plan from (quick, seed, generations); the tests pass a tiny one.
PlanFn = Callable[[bool, int, int | None], LoopPlan]
ACCOUNTING = (
    "bytes_from_domains: what a mechanism moves from the domains to the centre. Logits: 4 bytes per class "
    "of the head per transfer text a domain's model labels (distill, layer_lr, combined); importances: "
    "4 bytes per champion layer per student (layer_lr); weights: 4 bytes per fp32 parameter of each "
    "domain's model (transplant's students, the full-size experts); indices: 4 bytes per unit a student "
    "kept on the cut axes (structure); collected: the collected dataset's UTF-8 texts and a 4-byte label "
    "per labelled row (every mechanism whose context carries it: data, combined, layer_lr, and the full-size "
    "swarm, which runs the combined default)"
)


def run_draw(
    plan: LoopPlan, home: Path, store: WorkDir, seed: int, console: Console, large_v0: LargeV0
) -> dict[str, Any]:
    """One draw in a fresh registry at ``home``: large v0 and every generation; its report with figures."""
    if home.exists():
        shutil.rmtree(home)  # a draw that did not finish left a partial registry
    started = time.perf_counter()
    made, draw = run_generations(plan, home, store, seed, console, large_v0)
    generations = draw.generations
    full = generations[0].pop("full_size_swarm", None)
    report: dict[str, Any] = {
        "seed": seed,
        "large_v0": {**made, "test": generations[0]["large_before"]},
        "generations": generations,
        "full_size_swarm": full,
        "seconds": time.perf_counter() - started,
        "stage_seconds": {
            "large_v0": made["seconds"],
            **{f"g{g['generation']}.{k}": v for g in generations for k, v in g["seconds"].items()},
        },
        "optimisation": {
            f"{name}_interval": pgr_delta_interval(draw.outcomes, name, DEFAULT, seed=seed)
            for name in ("layer_lr", "structure")
        },
        "registry": str(home),
    }
    report["figures"] = figures(report, [m.name for m in plan.mechanisms])
    return report


def average_tree(values: list[Any]) -> Any:
    """The draws' reports merged: numbers averaged, equal values kept, differing ones listed per draw."""
    first = values[0]
    if all(v == first and type(v) is type(first) for v in values):
        return first
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return statistics.fmean(values)
    if all(isinstance(v, dict) for v in values):
        return {k: average_tree([v[k] for v in values]) for k in first if all(k in v for v in values)}
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1 and first:
        return [average_tree(list(items)) for items in zip(*values, strict=True)]
    return values


def default_seeds(quick: bool) -> int:
    """Draws run when ``--seeds`` is not given: one quick (a draw is the whole loop), two in full."""
    return 1 if quick else 2


def run_bench(
    quick: bool,
    out: Path,
    console: Console,
    seed: int = 0,
    seeds: int | None = None,
    generations: int | None = None,
    work: Path | None = None,
    plan_fn: PlanFn = plan_for,
    large_v0: LargeV0 = register_large_v0,
) -> dict[str, Any]:
    """Run ``seeds`` draws (seeds ``seed`` .. ``seed + seeds - 1``), write the JSON to ``out``, print the tables.

    ``work`` keeps large v0, each finished draw and its registry for a rerun (default: a temporary
    directory); a draw whose plan or fanbu's code changed runs again.
    """
    count = default_seeds(quick) if seeds is None else seeds
    if count < 1:
        raise ValueError(f"seeds must be at least 1, got {count}")
    started = time.perf_counter()
    draws, plans = [], []
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-loop-") as tmp:
        root = work or Path(tmp)
        store = WorkDir(root, console)
        for draw_seed in range(seed, seed + count):
            plan = plan_fn(quick, draw_seed, generations)
            if plan.generations < 2:
                raise ValueError(f"the loop bench runs at least 2 generations, got {plan.generations}")
            plans.append(plan.dump())

            def make(plan: LoopPlan = plan, draw_seed: int = draw_seed) -> dict[str, Any]:
                home = root / f"registry-seed{draw_seed}"
                return run_draw(plan, home, store, draw_seed, console, large_v0)

            key = {"plan": plans[-1], "code": source_fingerprint("fanbu")}
            draw = store.result(f"loop-draw-seed{draw_seed}", make, key)
            draw.pop("fingerprint", None)
            for generation in draw["generations"]:
                print_generation(generation, console)
            print_mechanisms(draw, console)
            draws.append(draw)
    mean, interval = over_draws(draws)
    names = [m["name"] for m in plans[0]["mechanisms"]]
    keys = ("pgr_small", "forgetting", "seconds", "bytes_from_domains", "params", "gate_passed")
    report = {
        "bench": "loop",
        "quick": quick,
        "command": f"fanbu bench loop{' --quick' if quick else ''}{f' --seed {seed}' if seed else ''}"
        f"{f' --generations {generations}' if generations else ''} --seeds {count} --out {out}",
        "seed": seed,
        "seeds": [d["seed"] for d in draws],
        "plan": plans[0],
        "accounting": ACCOUNTING,
        "mean": mean,
        "interval": interval,
        "interval_method": INTERVAL_METHOD + " (null with one draw)",
        "mechanisms": [{"name": n, **{k: mean.get(f"{n}.{k}") for k in keys}} for n in names],
        "generations": average_tree([d["generations"] for d in draws]),
        "full_size_swarm": average_tree([d["full_size_swarm"] for d in draws]),
        "target": targets(mean, interval, draws, quick),
        "runs": draws if count > 1 else [{k: v for k, v in draws[0].items() if k != "generations"}],
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out, report)
    if count > 1:
        print_over_draws(report, console)
    print_targets(report, console)
    return report
