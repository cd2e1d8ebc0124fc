"""The ``da`` section of ``fanbu bench unlabeled``: 20 Newsgroups -> BBC News, one seed at a time.

Each seed carves both sides' train/validation splits anew (the test split stays fixed), then trains every
registered method (:data:`fanbu.unlabeled.methods.METHODS`) and the target-supervised upper bound on the
same frozen features, the same batches and the same number of optimiser steps. The upper bound trains on
the pool's own labels (the target's train split) and serves only as the ratio's denominator. Each model
is scored once on the target test split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fanbu.data.domain import Split
from fanbu.unlabeled.adapt import AdaptResult, adapt, score
from fanbu.unlabeled.methods import METHODS, AdaptConfig
from fanbu.unlabeled.recipe import AdaptationRecipe
from fanbu.unlabeled.selection import dev_risk, importance_weights, per_text_loss
from fanbu.unlabeled.shift import DomainShift, load_shift

UPPER = "target_supervised"
BASELINE = "source_only"

Encode = Callable[[list[str]], Tensor]


def _labelled(encode: Encode, split: Split) -> tuple[Tensor, Tensor]:
    return encode(list(split.texts)), torch.tensor(split.labels or (), dtype=torch.long)


def _row(method: str, result: AdaptResult, shift: DomainShift, test: tuple[Tensor, Tensor],
         validation: tuple[Tensor, Tensor], validation_name: str, weights: np.ndarray | None = None) -> dict[str, Any]:
    scored = score(result.model, test, shift.labels)
    checked = score(result.model, validation, shift.labels)
    risk = None
    if weights is not None:  # DEV: the source validation losses weighted toward the target (no target label)
        losses = per_text_loss(result.model.predict_proba(validation[0]), validation[1].numpy())
        risk = dev_risk(losses, weights)
    return {
        "method": method,
        "target_acc": scored["acc"],
        "target_macro_f1": scored["macro_f1"],
        "f1": scored["f1"],
        "validation": validation_name,
        "validation_acc": checked["acc"],
        "dev_risk": risk,
        "threshold": result.threshold,
        "pseudo_labelled": result.pseudo_labelled,
        "steps": result.steps,
    }


def run_seed(recipe: AdaptationRecipe, seed: int, encode: Encode) -> dict[str, Any]:
    """Every method's row and the upper bound's for one seed (``encode`` maps texts to frozen features)."""
    shift = load_shift(recipe.shift, seed)
    source, validation = _labelled(encode, shift.source_train), _labelled(encode, shift.source_validation)
    pool, test = encode(list(shift.pool)), _labelled(encode, shift.target_test)
    weights = importance_weights(source[0], pool, validation[0], seed)
    rows = []
    for method in METHODS.names():
        config = AdaptConfig.model_validate({**recipe.adapt.model_dump(), "method": method, "seed": seed})
        result = adapt(config, source, pool, validation, len(shift.labels))
        rows.append(_row(method, result, shift, test, validation, "source", weights))
    upper = AdaptConfig.model_validate({**recipe.adapt.model_dump(), "method": BASELINE, "seed": seed})
    target_validation = _labelled(encode, shift.target_validation)
    result = adapt(upper, _labelled(encode, shift.target_train), pool, target_validation, len(shift.labels))
    rows.append(_row(UPPER, result, shift, test, target_validation, "target"))
    return {
        "seed": seed,
        "rows": rows,
        "data": {
            "labels": list(shift.labels),
            "source_labels": shift.source_labels,
            "source_train": len(shift.source_train),
            "source_validation": len(shift.source_validation),
            "pool": len(shift.pool),
            "target_validation": len(shift.target_validation),
            "target_test": len(shift.target_test),
        },
        "weights": {"mean": float(weights.mean()), "max": float(weights.max()),
                    "effective_n": float(weights.sum() ** 2 / (weights ** 2).sum())},
    }
