"""The recipes ``fanbu bench unlabeled`` runs, and its time budget."""

from __future__ import annotations

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
