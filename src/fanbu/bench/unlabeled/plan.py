"""The recipes ``fanbu bench unlabeled`` runs, and its time budget."""

from __future__ import annotations

from fanbu.bench.unlabeled.augment_data import AugmentBenchConfig
from fanbu.bench.unlabeled.ssl import SSLBenchConfig
from fanbu.unlabeled.recipe import AdaptationRecipe

QUICK_SECONDS = 1800  # the whole quick bench on 2 CPU cores, at most
DEFAULT_SEEDS = 3


def da_recipe(quick: bool) -> AdaptationRecipe:
    """The domain-adaptation section's recipe (its method is set per row).

    Quick: 400 source posts per class for training and 100 for validation, 128 tokens of each text (head
    and tail); full: 1,000 and 300 per class, 256 tokens. Both train 600 steps of 32 source + 32 target rows.
    """
    return AdaptationRecipe.model_validate({
        "shift": {"max_source_per_class": 400 if quick else 1000, "max_validation_per_class": 100 if quick else 300},
        "features": {"max_length": 128 if quick else 256},
        "adapt": {"steps": 600},
    })


def augment_settings(quick: bool) -> AugmentBenchConfig:
    """The augment section's settings.

    Quick: 150 BBC train texts per label loaded, 12 generated texts per label of at most 48 new tokens,
    128 encoder tokens; full: 400 per label, 40 texts per label of 96 tokens, 256 encoder tokens. Both: 8
    public texts per label, a pool of 100, students of 300 steps.
    """
    return AugmentBenchConfig.model_validate({
        "max_train_per_label": 150 if quick else 400,
        "features": {"max_length": 128 if quick else 256},
        "lm": {"per_label": 12 if quick else 40, "max_new_tokens": 48 if quick else 96},
    })


def ssl_settings(quick: bool) -> SSLBenchConfig:
    """The ssl section's settings.

    Quick (a small budget: a MiniLM training step of 16 texts takes about a second on 2 CPU cores, and the
    whole quick bench must fit in 30 minutes): the benchmark's first two domains (comp, rec), each
    domain's first 160 private examples as its pool and its full label count, 100 validation and 200 test
    texts, 48 tokens, 40 pretraining steps, a 3-epoch finetune stage, and the masked-LM objective only
    (the standard domain-adaptive pretraining objective; SimCSE runs in the full bench, where the
    objective is chosen on validation). Full: every domain, 1,000 examples, every test text, 128 tokens,
    400 steps, 5 epochs, masked LM and SimCSE. Both: 100 and all labels.
    """
    return SSLBenchConfig.model_validate({
        "data": {"source": "default", "domains": ["comp", "rec"] if quick else None,
                 "max_train": 160 if quick else 1000, "max_validation": 100, "max_test": 200 if quick else None},
        "max_length": 48 if quick else 128,
        "objectives": ["mlm"] if quick else ["mlm", "simcse"],
        "ssl": {"steps": 40 if quick else 400},
        "finetune": {"epochs": 3 if quick else 5, "batch_size": 16, "lr": 5e-5, "progress": False},
    })
