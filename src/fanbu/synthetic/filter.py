"""Which generated texts are kept: an ensemble of experts must agree with the intended label, and a text must
be neither an exact nor a near duplicate of the real data (or of an earlier generated candidate).

An expert is any callable mapping texts to class probabilities ``(n, labels)`` in the domain's label order
(an :class:`~fanbu.models.encoder.EncoderHandle`'s ``predict_proba`` with its head, a swarm expert, a
scikit-learn pipeline's ``predict_proba``). Every expert votes; one below the threshold vetoes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fanbu.errors import ConfigError
from fanbu.synthetic.config import FilterConfig
from fanbu.synthetic.text import Generated

Expert = Callable[[Sequence[str]], np.ndarray]
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Lowercase, accents folded, punctuation dropped, whitespace collapsed: what exact dedup compares."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(_WORD.findall(folded))


def _key(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


class Dedup:
    """Exact (normalised-text hash) and near (token-set Jaccard >= ``jaccard``) duplicate detection."""

    def __init__(self, real: Iterable[str], jaccard: float) -> None:
        self.jaccard = jaccard
        self.keys: set[str] = set()
        self.sets: list[frozenset[str]] = []
        self.index: dict[str, list[int]] = {}  # token -> rows holding it: only texts sharing a token are compared
        for text in real:
            self.add(text)

    def add(self, text: str) -> None:
        """Remember ``text`` as seen."""
        self.keys.add(_key(text))
        tokens = frozenset(normalise(text).split())
        for token in tokens:
            self.index.setdefault(token, []).append(len(self.sets))
        self.sets.append(tokens)

    def reason(self, text: str) -> str | None:
        """``'exact'`` or ``'near'`` when ``text`` duplicates a seen text, else ``None``."""
        if _key(text) in self.keys:
            return "exact"
        tokens = frozenset(normalise(text).split())
        shared: dict[int, int] = {}
        for token in tokens:
            for row in self.index.get(token, ()):
                shared[row] = shared.get(row, 0) + 1
        for row, common in shared.items():
            if common / (len(tokens) + len(self.sets[row]) - common) >= self.jaccard:
                return "near"
        return None


@dataclass
class FilterResult:
    """The kept texts and why the others went (counts), with the acceptance rate."""

    kept: list[Generated]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def acceptance(self) -> float:
        """Kept texts over generated texts (0 when nothing was generated)."""
        return self.counts["accepted"] / self.counts["generated"] if self.counts.get("generated") else 0.0

    def summary(self) -> dict[str, Any]:
        """The counts and the acceptance rate, JSON-able."""
        return {**self.counts, "acceptance": self.acceptance}


def _votes(experts: Mapping[str, Expert], texts: list[str], targets: np.ndarray, width: int,
           config: FilterConfig) -> np.ndarray:
    agree = np.ones(len(texts), dtype=bool)
    for name, expert in experts.items():
        probs = np.asarray(expert(texts))  # (n, labels)
        if probs.shape != (len(texts), width):
            raise ConfigError(f"expert {name!r} gave probabilities of shape {probs.shape}, expected "
                              f"{(len(texts), width)}: experts must score the domain's labels in its order")
        mine = probs[np.arange(len(texts)), targets]  # (n,)
        agree &= mine >= config.threshold
        if config.require_argmax:
            agree &= probs.argmax(axis=-1) == targets
    return agree


def filter_generated(generated: Sequence[Generated], experts: Mapping[str, Expert], labels: Sequence[str],
                     config: FilterConfig, real: Iterable[str] = ()) -> FilterResult:
    """Keep the generated texts that are long enough, not duplicates of ``real`` (or of each other), and that
    every expert assigns to their intended label (see :class:`FilterConfig`).

    Raises:
        ConfigError: no experts, or a text's label is not one of ``labels``.
    """
    if not experts:
        raise ConfigError("augment.lm.filter: no experts to filter with; give at least one classifier")
    column = {name: i for i, name in enumerate(labels)}
    unknown = sorted({g.label for g in generated} - set(column))
    if unknown:
        raise ConfigError(f"augment.lm: generated labels {unknown} are not among the domain's labels {list(labels)}")
    counts = {"generated": len(generated), "too_short": 0, "exact_duplicate": 0, "near_duplicate": 0,
              "vetoed": 0, "accepted": 0}
    seen = Dedup(real, config.jaccard)
    candidates = []
    for item in generated:
        if len(normalise(item.text).split()) < config.min_tokens:
            counts["too_short"] += 1
            continue
        why = seen.reason(item.text)
        if why is not None:
            counts[f"{why}_duplicate"] += 1
            continue
        seen.add(item.text)
        candidates.append(item)
    if not candidates:
        return FilterResult([], counts)
    targets = np.array([column[c.label] for c in candidates])
    agree = _votes(experts, [c.text for c in candidates], targets, len(labels), config)
    kept = [c for c, ok in zip(candidates, agree, strict=True) if ok]
    counts["vetoed"], counts["accepted"] = len(candidates) - len(kept), len(kept)
    return FilterResult(kept, counts)
