"""Confident pseudo-labels for self-training, with the confidence threshold chosen on labelled validation
text (the source's: never the target's test split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def choose_threshold(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """The confidence at or above which predictions are kept as pseudo-labels.

    Of 0 and each validation confidence, the threshold that maximises right minus wrong predictions among
    the validation texts kept (``confidence >= threshold``); ties go to the lower threshold (more text).
    ``None`` when every threshold keeps more wrong than right predictions: keep none.
    """
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must be equal 1-D arrays")
    candidates = np.unique(np.concatenate([[0.0], confidence]))  # ascending
    gains = np.where(correct, 1, -1)
    scores = [int(gains[confidence >= t].sum()) for t in candidates]
    best = int(np.argmax(scores))  # the first maximum: the lowest threshold
    return float(candidates[best]) if scores[best] > 0 else None


@dataclass(frozen=True)
class PseudoLabels:
    """Pool pseudo-labels: ``labels[i]`` is text ``i``'s predicted class, or -1 when not kept."""

    labels: Tensor  # (pool,)
    threshold: float | None

    @property
    def kept(self) -> int:
        return int((self.labels >= 0).sum())


def pseudo_label(pool_probs: np.ndarray, threshold: float | None) -> PseudoLabels:
    """Keep each pool text's argmax where its confidence reaches ``threshold`` (``None``: keep none)."""
    predicted = torch.from_numpy(pool_probs.argmax(axis=-1)).long()  # (pool,)
    if threshold is None:
        return PseudoLabels(torch.full_like(predicted, -1), None)
    keep = torch.from_numpy(pool_probs.max(axis=-1) >= threshold)
    return PseudoLabels(torch.where(keep, predicted, torch.full_like(predicted, -1)), threshold)
