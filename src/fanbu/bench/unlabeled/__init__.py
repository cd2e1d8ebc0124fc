"""``fanbu bench unlabeled``: learning from text without labels. Its ``da`` section: domain adaptation from
20 Newsgroups (comp, rec.sport, talk.politics) to BBC News (tech, sports, politics).

:mod:`~fanbu.bench.unlabeled.plan` holds the recipe, :mod:`~fanbu.bench.unlabeled.da` one seed,
:mod:`~fanbu.bench.unlabeled.report` the rows, targets and table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.stats import INTERVAL_METHOD
from fanbu.bench.unlabeled.da import UPPER, run_seed
from fanbu.bench.unlabeled.plan import DEFAULT_SEEDS, QUICK_SECONDS, da_recipe
from fanbu.bench.unlabeled.report import BEST_RULE, best_method, print_report, summarise, targets
from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.errors import ConfigError
from fanbu.io import atomic_write_json
from fanbu.unlabeled.features import FeatureStore, load_encoder

__all__ = ["run_bench"]

# the code a da seed runs: a change in it makes a kept seed again (other parts of fanbu.unlabeled do not)
DA_CODE = ("fanbu.train", "fanbu.bench.unlabeled", *(f"fanbu.unlabeled.{m}" for m in
                                                     ("adapt", "features", "methods", "pseudo", "recipe", "shift")))

DA_LEGEND = {
    "features": "all-MiniLM-L6-v2 frozen, mean-pooled, computed once per text; each method trains a bottleneck "
    "(Linear-ReLU-Dropout) and a linear head over them through the one training loop",
    "data": "every method draws the same source and target batches in the same order and takes the same number "
    "of optimiser steps; source-only draws the target rows too and ignores them",
    "choices": "no early stopping (every run ends with its last weights); self-training's confidence threshold is "
    "chosen on the source validation split; the best method is chosen on the source validation split; the "
    "target test split is scored once per model",
    UPPER: "trained on the pool's own labels (BBC train split) with the task loss alone; its validation_acc is on "
    "the labelled BBC validation split, read for the record only, never for a choice; used only as the "
    "denominator of gap_closed",
    "gap_closed": "(method - source_only) / (target_supervised - source_only) target test accuracy, per seed, then "
    "averaged",
}


def _command(quick: bool, out: Path, seeds: int) -> str:
    return (f"fanbu bench unlabeled{' --quick' if quick else ''}"
            f"{f' --seeds {seeds}' if seeds != DEFAULT_SEEDS else ''} --out {out}")


def run_bench(quick: bool, out: Path, console: Console, *, seeds: int = DEFAULT_SEEDS,
              work: Path | None = None) -> dict[str, Any]:
    """Run the ``da`` section for seeds 0..``seeds``-1, print its table and write the JSON report to ``out``.

    ``work``: keep each finished seed there; a rerun with the same recipe and code reads it back.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: run at least one seed")
    started = time.perf_counter()
    recipe = da_recipe(quick)
    code = source_fingerprint(*DA_CODE)
    store: list[FeatureStore] = []  # the encoder loads only when a seed has to run

    def encode(texts: list[str]):
        if not store:
            store.append(FeatureStore(load_encoder(recipe.features), recipe.features.batch_size))
        return store[0](texts)

    with tempfile.TemporaryDirectory(prefix="fanbu-bench-unlabeled-") as tmp:
        workdir = WorkDir(work or Path(tmp), console)
        runs = [
            workdir.result(f"da-seed-{seed}", lambda seed=seed: run_seed(recipe, seed, encode),
                           settings={"recipe": recipe.model_dump(mode="json"), "seed": seed, "code": code}, kind="da")
            for seed in range(seeds)
        ]
    rows = summarise(runs)
    best = best_method(rows)
    seconds = time.perf_counter() - started
    report = {
        "bench": "unlabeled",
        "quick": quick,
        "command": _command(quick, out, seeds),
        "seeds": list(range(seeds)),
        "da": rows,
        "best": best,
        "best_rule": BEST_RULE,
        "target": targets(rows, best, seconds, quick, QUICK_SECONDS),
        "data": runs[0]["data"],
        "legend": DA_LEGEND,
        "interval_method": INTERVAL_METHOD,
        "runs": runs,
        "recipe": recipe.model_dump(mode="json"),
        "seconds": seconds,
    }
    atomic_write_json(out, report)
    print_report(report, console)
    return report
