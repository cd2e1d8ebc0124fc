"""The gate's counterfactual score: accuracy beside accuracy on the same texts with a word planted.

A counterfactual set is a split whose texts carry a word (a suspected shortcut) at random, whatever
their class (:func:`counterfactual_set`); a model that follows the word loses accuracy there, one that
reads the text does not. :func:`counterfactual_scores` reports, per task, accuracy, counterfactual
accuracy and their difference (``drop``, in points) for the candidate and the champion. It is a report
beside the gate's decision: promotion reads the gate splits only (:mod:`fanbu.feedback.gate.promotion`),
never this score, and a counterfactual set built from the test split is scored for the report alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fanbu.attribution.counterfactual import plant_at_random
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import Labeled
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import score_heads


def counterfactual_set(
    splits: Mapping[str, Labeled], words: Sequence[str], rate: float, seed: int, within: int | None = None
) -> dict[str, Labeled]:
    """Each split with every word of ``words`` planted into a random ``rate`` share of its texts (among
    their first ``within`` words, so truncation keeps them; None: anywhere); the labels stay as they
    are (the planted words carry no class)."""
    if not words:
        raise ConfigError("counterfactual_set: give at least one word to plant (the suspected shortcuts)")
    result: dict[str, Labeled] = {}
    for index, (task, (texts, labels)) in enumerate(sorted(splits.items())):
        planted = list(texts)
        for offset, word in enumerate(words):
            planted = plant_at_random(planted, word, rate, seed + 1000 * index + offset, within)
        result[task] = (planted, list(labels))
    return result


def accuracy_drop(
    model: EncoderHandle, clean: Mapping[str, Labeled], counterfactual: Mapping[str, Labeled]
) -> dict[str, Any]:
    """Per task: ``accuracy``, ``counterfactual_accuracy`` and ``drop`` (points); and their means."""
    missing = sorted(set(clean) ^ set(counterfactual))
    if missing:
        raise ConfigError(f"counterfactual score: tasks {missing} lack a clean or a counterfactual split")
    plain, _ = score_heads(model, clean)
    planted, _ = score_heads(model, counterfactual)
    tasks = {
        t: {
            "accuracy": plain[t]["accuracy"],
            "counterfactual_accuracy": planted[t]["accuracy"],
            "drop": 100 * (plain[t]["accuracy"] - planted[t]["accuracy"]),
        }
        for t in sorted(clean)
    }
    means = {
        k: sum(v[k] for v in tasks.values()) / max(1, len(tasks))
        for k in ("accuracy", "counterfactual_accuracy", "drop")
    }
    return {"tasks": tasks, **means}


def counterfactual_scores(
    candidate: EncoderHandle,
    champion: EncoderHandle,
    clean: Mapping[str, Labeled],
    counterfactual: Mapping[str, Labeled],
) -> dict[str, Any]:
    """The candidate's and the champion's counterfactual scores on the same splits (a report: no decision
    reads it)."""
    return {
        "candidate": accuracy_drop(candidate, clean, counterfactual),
        "champion": accuracy_drop(champion, clean, counterfactual),
    }
