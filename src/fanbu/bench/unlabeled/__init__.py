"""``fanbu bench unlabeled``: learning from text without labels. Its ``da`` section: domain adaptation from
20 Newsgroups (comp, rec.sport, talk.politics) to BBC News (tech, sports, politics); its ``augment``
section: generative augmentation (LM text, a conditional GAN) when real data is scarce.

:mod:`~fanbu.bench.unlabeled.plan` holds the recipe, :mod:`~fanbu.bench.unlabeled.da` one seed,
:mod:`~fanbu.bench.unlabeled.report` the rows, targets and table; ``augment*`` modules the augment section.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.stats import INTERVAL_METHOD
from fanbu.bench.unlabeled.augment_report import print_augment
from fanbu.bench.unlabeled.augment_section import run_augment
from fanbu.bench.unlabeled.da import UPPER, run_seed
from fanbu.bench.unlabeled.plan import DEFAULT_SEEDS, QUICK_SECONDS, augment_settings, da_recipe, ssl_settings
from fanbu.bench.unlabeled.report import (
    BEST_RULE,
    best_by_validation_accuracy,
    best_method,
    print_report,
    quick_target,
    summarise,
    targets,
)
from fanbu.bench.unlabeled.ssl import LoadBase, join_seed, section_domains
from fanbu.bench.unlabeled.ssl import run_domain as run_ssl_domain
from fanbu.bench.unlabeled.ssl_report import CHOICE_RULE, chosen, print_ssl
from fanbu.bench.unlabeled.ssl_report import summarise as summarise_ssl
from fanbu.bench.unlabeled.ssl_report import targets as ssl_targets
from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.errors import ConfigError
from fanbu.io import atomic_write_json
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderHandle
from fanbu.unlabeled.features import FeatureConfig, FeatureStore, load_encoder

__all__ = ["SECTIONS", "run_bench"]

SECTIONS = ("da", "augment", "ssl")

# the code a da seed runs: a change in it makes a kept seed again (other parts of fanbu.unlabeled do not)
DA_CODE = ("fanbu.train", "fanbu.bench.unlabeled", *(f"fanbu.unlabeled.{m}" for m in
                                                     ("adapt", "features", "methods", "pseudo", "recipe", "shift",
                                                      "selection")))

DA_LEGEND = {
    "features": "all-MiniLM-L6-v2 frozen, mean-pooled, computed once per text; each method trains a bottleneck "
    "(Linear-ReLU-Dropout) and a linear head over them through the one training loop",
    "data": "every method draws the same source and target batches in the same order and takes the same number "
    "of optimiser steps; source-only draws the target rows too and ignores them",
    "choices": "no early stopping (every run ends with its last weights); self-training's confidence threshold is "
    "chosen on the source validation split; the best method is chosen by DEV (the source validation split weighted "
    "toward the unlabeled target pool); the target test split is scored once per model",
    UPPER: "trained on the pool's own labels (BBC train split) with the task loss alone; its validation_acc is on "
    "the labelled BBC validation split, read for the record only, never for a choice; used only as the "
    "denominator of gap_closed",
    "gap_closed": "(method - source_only) / (target_supervised - source_only) target test accuracy, per seed, then "
    "averaged",
}


def _command(quick: bool, out: Path, seeds: int, sections: Sequence[str]) -> str:
    chosen = f" --sections {','.join(sections)}" if tuple(sections) != SECTIONS else ""
    return (f"fanbu bench unlabeled{' --quick' if quick else ''}"
            f"{f' --seeds {seeds}' if seeds != DEFAULT_SEEDS else ''}{chosen} --out {out}")


def load_generator(source: str) -> CausalLMHandle:
    """The augment section's text generator (a seam for tests)."""
    return CausalLMHandle.from_source(source, max_length=1024)


def load_base(source: str, max_length: int) -> EncoderHandle:
    """The ssl section's large model (a seam for tests)."""
    return EncoderHandle.from_source(source, max_length=max_length)


# the code an ssl seed runs: a change in it makes a kept seed again
SSL_CODE = ("fanbu.train", "fanbu.derive", "fanbu.models", "fanbu.bench.unlabeled.ssl")


def _ssl_section(quick: bool, workdir: WorkDir, seeds: int, load: LoadBase) -> dict[str, Any]:
    settings = ssl_settings(quick)
    code = source_fingerprint(*SSL_CODE)
    runs = []
    for seed in range(seeds):  # each domain of each seed is kept as it finishes: a rerun resumes there
        parts = [
            workdir.result(f"ssl-seed-{seed}-{name}",
                           lambda seed=seed, name=name: run_ssl_domain(settings, seed, name, load,
                                                                       workdir.root / "ssl" / f"seed-{seed}" / name),
                           settings={"settings": settings.model_dump(mode="json"), "seed": seed, "domain": name,
                                     "code": code}, kind="ssl")
            for name in section_domains(settings)
        ]
        runs.append(join_seed(seed, parts))
    rows = summarise_ssl(runs, settings.objectives)
    low = min(c for c in settings.labels if c is not None)
    return {"rows": rows, "chosen": chosen(rows), "choice_rule": CHOICE_RULE, "target": ssl_targets(rows, low),
            "settings": settings.model_dump(mode="json"), "runs": runs}


def run_bench(quick: bool, out: Path, console: Console, *, seeds: int = DEFAULT_SEEDS,
              work: Path | None = None, sections: Sequence[str] = SECTIONS) -> dict[str, Any]:
    """Run ``sections`` (``da``, ``augment``) for seeds 0..``seeds``-1, print their tables and write the JSON
    report to ``out``.

    ``work``: keep each finished da seed and the generated texts there; a rerun reads them back.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: run at least one seed")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(f"--sections {','.join(sections)}: choose one or more of {', '.join(SECTIONS)}")
    started = time.perf_counter()
    recipe = da_recipe(quick)
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-unlabeled-") as tmp:
        workdir = WorkDir(work or Path(tmp), console)
        report: dict[str, Any] = {"bench": "unlabeled", "quick": quick, "command": _command(quick, out, seeds, sections),
                                  "seeds": list(range(seeds)), "sections": list(sections)}
        if "da" in sections:
            encode = _encoder(recipe.features)
            runs = [
                workdir.result(f"da-seed-{seed}", lambda seed=seed: run_seed(recipe, seed, encode),
                               settings={"recipe": recipe.model_dump(mode="json"), "seed": seed,
                                         "code": source_fingerprint(*DA_CODE)}, kind="da")
                for seed in range(seeds)
            ]
            rows = summarise(runs)
            report.update({"da": rows, "best": best_method(rows), "best_rule": BEST_RULE,
                           "best_by_validation_acc": best_by_validation_accuracy(rows), "data": runs[0]["data"],
                           "legend": DA_LEGEND, "runs": runs, "recipe": recipe.model_dump(mode="json")})
        if "augment" in sections:
            settings = augment_settings(quick)
            section = run_augment(settings, workdir, _encoder(settings.features), seeds, load_generator)
            report.update({"augment": section.pop("rows"), "augment_section": {**section,
                                                                               "settings": settings.model_dump(mode="json")}})
        if "ssl" in sections:
            section = _ssl_section(quick, workdir, seeds, load_base)
            report.update({"ssl": section.pop("rows"), "ssl_section": section})
    seconds = time.perf_counter() - started
    target = targets(report["da"], report["best"], seconds, quick, QUICK_SECONDS) if "da" in report else {}
    target.update(report.get("augment_section", {}).get("target", {}))
    target.update(report.get("ssl_section", {}).get("target", {}))
    if quick and "quick_seconds" not in target:
        target["quick_seconds"] = quick_target(seconds, QUICK_SECONDS)
    report.update({"target": target, "interval_method": INTERVAL_METHOD, "seconds": seconds})
    atomic_write_json(out, report)
    if "augment" in report:
        print_augment({"rows": report["augment"], **report["augment_section"]}, console)
    if "ssl" in report:
        print_ssl({"rows": report["ssl"], **report["ssl_section"]}, console)
    print_report(report, console)
    return report


def _encoder(config: FeatureConfig):
    """Texts to frozen features; the encoder loads on the first call (not at all when every part is kept)."""
    store: list[FeatureStore] = []

    def encode(texts: list[str]):
        if not store:
            store.append(FeatureStore(load_encoder(config), config.batch_size))
        return store[0](texts)

    return encode
