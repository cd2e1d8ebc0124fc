"""The merge section of ``fanbu bench structure``: feedback by merging, flat or by level, on the 20 Newsgroups tree.

Large v0 is the packaged MiniLM trained on the public slices of 20 Newsgroups leaf domains
(:data:`~fanbu.hierarchy.newsgroups.NEWSGROUP_LEAVES`, a '.' in a name written '_': it names a head) and
of a held-out task (BBC News). Each leaf's expert is a full fine-tune of large v0 on its private slice.
The same swarm is then merged back into large v0 by the ``merge`` feedback strategy, for each method,
twice: ``flat`` (every expert's task vector at once) and ``levels`` (each group's experts first, then
the groups into the champion: ``merge.levels`` with the 20 Newsgroups tree). Each candidate is scored on
every leaf's test split (mean accuracy, PGR against its expert) and on the held-out task (forgetting).
Expert selection reads the validation slices, as in ``fanbu feedback``; nothing here reads a test split
but the report. The section has no target of the issue's: it shows what merging by level changes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from fanbu.bench.feedback import LARGE
from fanbu.bench.stats import INTERVAL_METHOD, mean_interval
from fanbu.bench.structure.draws import draw_train, run_draws
from fanbu.config import Strict
from fanbu.data.builtin import bbc_news
from fanbu.data.domain import Benchmark
from fanbu.data.slices import pairs, split_pairs
from fanbu.feedback import FeedbackContext, Labeled
from fanbu.feedback.strategies.merge import MergeConfig, merge_strategy
from fanbu.hierarchy.newsgroups import NEWSGROUP_LEAVES, leaf_group, newsgroups_leaf_domains
from fanbu.hierarchy.tree import TreeConfig
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import score_heads, train_heads
from fanbu.train.large import train_large_v0

# two groups of two leaves and two groups of one: merging by level weighs them differently from flat
QUICK_MERGE_LEAVES = ("comp.sys", "comp.sw", "rec.vehicles", "rec.sport", "sci.tech", "talk.politics")
HELDOUT = "bbc"
ARRANGEMENTS = ("flat", "levels")


class MergeBenchSettings(Strict):
    """What the merge section runs."""

    quick: bool = Field(True, description="Quick caps (the preset of `--quick`).")
    seed: int = Field(0, description="First draw's seed (slices, heads, training).")
    seeds: int = Field(3, ge=1, description="Draws run (seed .. seed + seeds - 1); means with t-intervals.")
    large: str = Field(LARGE, description="The large model's source.")
    leaves: list[str] = Field(list(QUICK_MERGE_LEAVES), min_length=2, description="20 Newsgroups leaves.")
    methods: list[str] = Field(
        ["average", "ties"], min_length=1, description="Merge methods, each flat and by level."
    )
    public: int = Field(150, ge=1, description="Public texts per task (large v0).")
    private: int | None = Field(300, ge=1, description="Texts each expert trains on; null: its whole slice.")
    validation: int = Field(60, ge=1, description="Validation texts per task (early stopping, selection).")
    test: int | None = Field(300, ge=1, description="Test texts per task; null: all.")
    max_length: int = Field(48, ge=8, description="Tokens per text.")
    epochs: int = Field(2, ge=1, description="Epochs of large v0 and the experts.")


def merge_settings(quick: bool, overrides: list[str] | None = None) -> MergeBenchSettings:
    """The quick or full preset (full: every leaf, every private and test text, 128 tokens), with
    ``key=value`` overrides."""
    from fanbu.config import load_recipe

    preset: dict[str, Any] = {"quick": quick}
    if not quick:
        preset.update(
            leaves=list(NEWSGROUP_LEAVES), private=None, test=None, public=250, validation=200, max_length=128
        )
    return load_recipe(
        MergeBenchSettings, overrides=overrides or [], base=MergeBenchSettings(**preset).model_dump()
    )


def head_name(leaf: str) -> str:
    """A leaf's name as a head (a '.' cannot name one)."""
    return leaf.replace(".", "_")


def leaf_benchmark(leaves: list[str], seed: int) -> Benchmark:
    """The leaves (renamed for heads) as feedback domains, BBC News held out."""
    domains = [
        dataclasses.replace(d, name=head_name(d.name)) for d in newsgroups_leaf_domains(leaves, seed=seed)
    ]
    heldout = dataclasses.replace(bbc_news(seed), name=HELDOUT)
    return Benchmark(domains=tuple(domains), heldout=(heldout,), public_fraction=0.1, seed=seed)


def levels_of(leaves: list[str]) -> TreeConfig:
    """The 20 Newsgroups tree of ``leaves`` as ``merge.levels``: its groups on the trunk."""
    groups = {leaf_group(leaf) for leaf in leaves}
    return TreeConfig(
        groups=dict.fromkeys(sorted(groups)), leaves={head_name(x): leaf_group(x) for x in leaves}
    )


def accuracies(model: EncoderHandle, splits: dict[str, Labeled]) -> dict[str, float]:
    """Accuracy per head, in points."""
    metrics, _ = score_heads(model, splits)
    return {task: 100 * m["accuracy"] for task, m in metrics.items()}


def run_draw(
    settings: MergeBenchSettings, seed: int, log: Callable[[str], None], work_dir: Path
) -> dict[str, Any]:
    """One draw: large v0, one expert per leaf, every method merged flat and by level, all scored."""
    started = time.perf_counter()
    bench = leaf_benchmark(settings.leaves, seed)
    leaves = [head_name(x) for x in settings.leaves]
    tasks = [*leaves, HELDOUT]
    public = split_pairs(bench, "public", tasks, settings.public, seed)
    validation = split_pairs(bench, "validation", tasks, settings.validation, seed)
    tests = split_pairs(bench, "test", tasks, settings.test, seed)
    train = draw_train(settings.epochs, seed)
    log(f"large v0: {settings.large} on the public slices of {', '.join(tasks)}")
    large = EncoderHandle.from_source(settings.large, max_length=settings.max_length)
    train_large_v0(large, bench, public, train, validation, head_seed=seed)
    large.model.eval()
    experts = {}
    for leaf in leaves:
        log(f"expert {leaf}: large v0 fine-tuned on its private slice")
        expert = copy.deepcopy(large)
        train_heads(
            expert,
            {leaf: pairs(bench.private(leaf), settings.private, seed)},
            train,
            {leaf: validation[leaf]},
            description=f"expert {leaf}",
        )
        expert.model.eval()
        experts[leaf] = expert
    champion = accuracies(large, tests)
    expert_acc = {leaf: accuracies(e, {leaf: tests[leaf]})[leaf] for leaf, e in experts.items()}
    ctx = FeedbackContext(
        large=large,
        experts=experts,
        public={t: public[t] for t in leaves},
        validation={t: validation[t] for t in leaves},
        work_dir=work_dir,
        seed=seed,
    )
    rows = [
        row("champion", "-", champion, champion, expert_acc, leaves),
        row("experts", "-", {**champion, **expert_acc}, champion, expert_acc, leaves),
    ]
    levels = levels_of(settings.leaves)
    for method in settings.methods:
        for arrangement in ARRANGEMENTS:
            config = MergeConfig.model_validate(
                {"method": method, **({"levels": levels} if arrangement == "levels" else {})}
            )
            out = merge_strategy(ctx, config)
            scored = row(method, arrangement, accuracies(out.handle, tests), champion, expert_acc, leaves)
            scored["selected"] = out.details.get("selected")
            log(
                f"  merge {method} {arrangement}: leaves {scored['acc_mean']:.1f}, pgr {scored['pgr_mean']:.3f}, "
                f"forgetting {scored['forgetting']:.1f}"
            )
            rows.append(scored)
    return {
        "seed": seed,
        "rows": rows,
        "levels": levels.model_dump(),
        "seconds": time.perf_counter() - started,
    }


def row(
    method: str,
    arrangement: str,
    acc: dict[str, float],
    champion: dict[str, float],
    expert_acc: dict[str, float],
    leaves: list[str],
) -> dict[str, Any]:
    """One candidate's leaf accuracies, their mean, mean PGR over leaves whose expert beat the champion,
    and forgetting on the held-out task (points)."""
    gains = [
        (acc[x] - champion[x]) / (expert_acc[x] - champion[x]) for x in leaves if expert_acc[x] > champion[x]
    ]
    return {
        "method": method,
        "arrangement": arrangement,
        "leaf_acc": {x: acc[x] for x in leaves},
        "acc_mean": sum(acc[x] for x in leaves) / len(leaves),
        "pgr_mean": sum(gains) / len(gains) if gains else None,
        "forgetting": champion[HELDOUT] - acc[HELDOUT],
    }


def summarise(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """Each row's mean over draws with t-intervals, and by-level minus flat per method (paired by draw)."""
    keys = [(r["method"], r["arrangement"]) for r in draws[0]["rows"]]
    rows = []
    for method, arrangement in keys:
        found = [
            next(r for r in d["rows"] if (r["method"], r["arrangement"]) == (method, arrangement))
            for d in draws
        ]
        entry: dict[str, Any] = {"method": method, "arrangement": arrangement}
        for key in ("acc_mean", "pgr_mean", "forgetting"):
            values = [r[key] for r in found if r[key] is not None]
            entry[key], entry[f"{key}_interval"] = mean_interval(values) if values else (None, None)
        leaves = list(found[0]["leaf_acc"])
        entry["leaf_acc"] = {x: sum(r["leaf_acc"][x] for r in found) / len(found) for x in leaves}
        rows.append(entry)
    by = {(r["method"], r["arrangement"]): r for r in rows}
    compared = {}
    for method in {m for m, a in keys if a in ARRANGEMENTS}:
        flat = [
            next(r for r in d["rows"] if (r["method"], r["arrangement"]) == (method, "flat")) for d in draws
        ]
        lev = [
            next(r for r in d["rows"] if (r["method"], r["arrangement"]) == (method, "levels")) for d in draws
        ]
        diff, interval = mean_interval(
            [b["acc_mean"] - a["acc_mean"] for a, b in zip(flat, lev, strict=True)]
        )
        worst = min(
            by[(method, "levels")]["leaf_acc"][x] - by[(method, "flat")]["leaf_acc"][x]
            for x in by[(method, "flat")]["leaf_acc"]
        )
        compared[method] = {
            "levels_minus_flat": diff,
            "interval": interval,
            "worst_leaf": worst,
            "forgetting_levels_minus_flat": by[(method, "levels")]["forgetting"]
            - by[(method, "flat")]["forgetting"],
        }
    return {"merge": rows, "levels_vs_flat": compared, "interval_method": INTERVAL_METHOD}


def run_merge(settings: MergeBenchSettings, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every draw of the merge section; the JSON-able report (rows, by-level vs flat, each draw)."""
    return run_draws(settings, run_draw, summarise, "fanbu-bench-merge-", log)


def print_merge(report: dict[str, Any], console: Console) -> None:
    """The merge rows and the by-level comparison as rich tables."""
    table = Table(
        title="merge: the swarm merged into large v0, flat or by level (test, points; mean over draws)"
    )
    for column in ("method", "arrangement", "leaf acc", "PGR", "forgetting"):
        table.add_column(column)
    for r in report["merge"]:
        cells = [f"{r[k]:.1f}" if r[k] is not None else "-" for k in ("acc_mean",)]
        cells.append(f"{r['pgr_mean']:.3f}" if r["pgr_mean"] is not None else "-")
        cells.append(f"{r['forgetting']:.1f}" if r["forgetting"] is not None else "-")
        table.add_row(r["method"], r["arrangement"], *cells)
    console.print(table)
    for method, c in report["levels_vs_flat"].items():
        interval = "" if c["interval"] is None else f" [{c['interval'][0]:.1f}, {c['interval'][1]:.1f}]"
        console.print(
            f"{method}: by level minus flat {c['levels_minus_flat']:+.1f}{interval} points on the leaves' "
            f"mean, worst leaf {c['worst_leaf']:+.1f}, forgetting {c['forgetting_levels_minus_flat']:+.1f}",
            highlight=False,
        )
