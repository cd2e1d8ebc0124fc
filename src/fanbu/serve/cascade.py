"""Routes: a single model, or an edge-to-large cascade; answering a batch and tuning the threshold.

A cascade's small model answers every text; texts whose top probability is below the threshold are
answered again by the large model, whose answer is returned. Both answers are logged.

A micro-batch holds texts of every length; every predictor runs them in runs of similar length
(:func:`fanbu.models.predict.length_runs`), so little of the model's time goes on padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fanbu.collect.hashing import PrivacyMode, stored_form
from fanbu.collect.schema import new_prediction_id
from fanbu.collect.store import Answer, Prediction
from fanbu.errors import ConfigError
from fanbu.serve.models import Served


@dataclass
class Route:
    """What a client may name as its ``model``: one model, or a cascade (``large`` set)."""

    name: str
    small: Served
    large: Served | None = None
    threshold: float = 0.0
    labels: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        if self.large is None:
            self.labels = dict(self.small.labels)
            return
        self.labels = {h: n for h, n in self.small.labels.items() if self.large.labels.get(h) == n}
        if not self.labels:
            raise ConfigError(
                f"cascade {self.name!r}: {self.small.record.id} and {self.large.record.id} share no head with "
                "the same label names; pair a small model with the large model it was derived from"
            )

    def answer(
        self, texts: list[str], head: str, privacy: PrivacyMode, batch_size: int = 32
    ) -> list[Prediction]:
        """Answer ``texts`` on ``head`` (escalating low-confidence ones), ready to be logged."""
        small_probs = self.small.predictor.predict_proba(texts, head, batch_size)  # (n, num_labels)
        role = "single" if self.large is None else "small"
        answers = [[_answer(role, self.small, head, p)] for p in small_probs]
        if self.large is not None:
            low = [i for i, a in enumerate(answers) if a[0].confidence < self.threshold]
            if low:
                large_probs = self.large.predictor.predict_proba([texts[i] for i in low], head, batch_size)
                for i, probs in zip(low, large_probs, strict=True):
                    answers[i].append(_answer("large", self.large, head, probs))
        predictions = []
        for text, text_answers in zip(texts, answers, strict=True):
            stored, digest = stored_form(text, privacy)
            predictions.append(
                Prediction(new_prediction_id(), self.name, head, stored, digest, privacy, tuple(text_answers))
            )
        return predictions


def _answer(role: str, served: Served, head: str, probs: np.ndarray) -> Answer:
    index = int(np.argmax(probs))
    return Answer(
        role,
        served.record.id,
        served.labels[head][index],
        float(probs[index]),
        tuple(float(p) for p in probs),
    )


def tune_threshold(confidences: Sequence[float], target_rate: float) -> float:
    """The threshold below which at most ``target_rate`` of ``confidences`` fall (escalate if below).

    Ties can only lower the share; an empty list gives 0.0 (never escalate).
    """
    if not 0.0 <= target_rate <= 1.0:
        raise ConfigError(f"target escalation rate must be in [0, 1], got {target_rate}")
    values = sorted(float(c) for c in confidences)
    if not values:
        return 0.0
    k = math.floor(target_rate * len(values))
    return values[k] if k < len(values) else math.nextafter(values[-1], math.inf)
