"""Running the ``augment`` section: generate (cached in the work directory), filter, register, then seeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fanbu.bench.unlabeled.augment import run_seed
from fanbu.bench.unlabeled.augment_data import (
    AugmentBenchConfig,
    Encode,
    choose_filter,
    prepare,
    public_examples,
)
from fanbu.bench.unlabeled.augment_report import best_generators, gan_reason, summarise, targets
from fanbu.bench.work import WorkDir
from fanbu.io import sha256_json
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import Registry
from fanbu.synthetic import Generated, SyntheticSet, build_prompt, generate_texts, register_synthetic

LEGEND = {
    "head": "a head over the frozen encoder's features trained on the labelled public slice (+ synthetic rows)",
    "distill": "a head trained on <= 100 unlabeled pool texts labelled by the teacher's probabilities (+ synthetic "
    "rows, labelled by the teacher: feature-level distillation for GAN samples)",
    "teacher": "a head over the same features trained on half of the remaining train split (also an expert of the "
    "filter, with a TF-IDF logistic regression on the same half)",
    "checkers": "held out from the filter: a head and a TF-IDF complement naive Bayes trained on the other half; "
    "agreement = their accuracy on synthetic rows against the intended (conditioning) labels",
    "pgr": "(acc - floor) / (teacher - floor), floor = nearest class mean of the public slice, all on test",
    "steps": "every student takes the same optimiser steps and batch size, augmented or not",
    "choices": "the filter threshold (seed 0 head student) and the GAN steps (per run) are chosen on validation",
    "dedup": "generated texts are deduplicated against the train and validation texts (normalised hash, token "
    "Jaccard) and each other",
}


def _generate(config: AugmentBenchConfig, examples: dict[str, list[str]], labels: tuple[str, ...],
              load_generator: Callable[[str], CausalLMHandle]) -> dict[str, Any]:
    out = generate_texts(load_generator(config.lm.generator), examples, labels, config.lm, seed=0)
    return {"generated": [{"text": g.text, "label": g.label, "prompt": g.prompt} for g in out]}


def run_augment(config: AugmentBenchConfig, workdir: WorkDir, encode: Encode, seeds: int,
                load_generator: Callable[[str], CausalLMHandle]) -> dict[str, Any]:
    """The augment section: rows, targets and checks, JSON-able."""
    prepared = prepare(config, encode)
    examples = public_examples(prepared)
    settings = {"lm": config.lm.model_dump(mode="json"), "examples": sha256_json(examples)}
    cached = workdir.result("augment-generated", lambda: _generate(config, examples, prepared.labels, load_generator),
                            settings=settings, kind="augment")
    generated = [Generated(**g) for g in cached["generated"]]
    chosen = choose_filter(prepared, config, generated, encode)
    kept = chosen["chosen"].pop("kept")
    acceptance = chosen["chosen"]["acceptance"]
    lineage = {"generator": config.lm.generator, "seed": 0,
               "prompts": {"template": build_prompt("{label}", ["{example}"]), "count": len(generated),
                           "shots": config.lm.shots, "examples": settings["examples"]},
               "filter": {"experts": sorted(prepared.experts), "threshold": chosen["chosen"]["threshold"],
                          "settings": config.lm.filter.model_dump(mode="json"),
                          "counts": {k: v for k, v in chosen["chosen"].items() if k != "validation_acc"}}}
    with Registry.open(workdir.root) as registry:
        record = register_synthetic(registry, SyntheticSet(f"synthetic/{prepared.domain.name}-lm",
                                                           prepared.domain.name, list(prepared.labels), lineage,
                                                           texts=kept))
    runs = [run_seed(prepared, config, kept, acceptance, seed, encode) for seed in range(seeds)]
    rows = summarise(runs)
    best = best_generators(rows)
    return {
        "rows": rows, "best": best, "target": targets(rows, best, runs),
        "gan_reason": {task: gan_reason(rows, task) for task in ("head", "distill")},
        "filter": chosen, "dataset": record.id, "lineage": lineage, "data": prepared.info, "legend": LEGEND,
        "generated": len(generated), "kept_examples": [{"text": g.text[:200], "label": g.label} for g in kept[:5]],
        "runs": runs,
    }
