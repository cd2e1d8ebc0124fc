"""Counterfactual texts: a word planted, swapped for another or removed, everything else unchanged.

The benches plant a spurious word with :func:`insert_word`; the ``invariance`` feedback option makes
counterfactual copies of transfer texts with :func:`edit_words` (its label stays the teachers'), and the
gate scores a candidate on texts with a word planted at random (:func:`plant_at_random`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from fanbu.errors import ConfigError

Edit = Literal["swap", "remove"]


def _pattern(words: Sequence[str]) -> re.Pattern[str]:
    escaped = sorted((re.escape(w) for w in words if w), key=len, reverse=True)
    if not escaped:
        raise ConfigError("counterfactual edits need at least one non-empty word to edit")
    return re.compile(r"(?<!\w)(" + "|".join(escaped) + r")(?!\w)", flags=re.IGNORECASE)


def contains_any(text: str, words: Sequence[str]) -> bool:
    """Whether ``text`` holds any of ``words`` as a whole word (case-insensitive)."""
    return bool(words) and _pattern(words).search(text) is not None


def insert_word(text: str, word: str, rng: np.random.Generator, within: int | None = None) -> str:
    """``text`` with ``word`` put between two of its words (or at either end), chosen by ``rng``;
    ``within``: among the first that many words only, so that truncating a long text keeps it."""
    parts = text.split(" ")
    last = len(parts) if within is None else min(len(parts), within)
    parts.insert(int(rng.integers(0, last + 1)), word)
    return " ".join(parts)


def plant_at_random(
    texts: Sequence[str], word: str, rate: float, seed: int, within: int | None = None
) -> list[str]:
    """Each text, with probability ``rate`` and whatever its class, gets ``word`` at a random place
    (among its first ``within`` words; None: anywhere)."""
    if not 0 <= rate <= 1:
        raise ConfigError(f"counterfactual rate must lie in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    return [insert_word(t, word, rng, within) if rng.random() < rate else t for t in texts]


def edit_words(
    text: str, words: Sequence[str], edit: Edit, vocabulary: Sequence[str], rng: np.random.Generator
) -> str:
    """``text`` with every whole-word occurrence of ``words`` removed or swapped for a random word of
    ``vocabulary`` (a fresh draw per occurrence)."""
    if edit == "swap" and not vocabulary:
        raise ConfigError("counterfactual: swap needs a non-empty vocabulary to draw replacement words from")
    pattern = _pattern(words)
    if edit == "remove":
        return re.sub(r"\s{2,}", " ", pattern.sub("", text)).strip()
    return pattern.sub(lambda _: vocabulary[int(rng.integers(0, len(vocabulary)))], text)


def plain_vocabulary(vocab: Sequence[str], exclude: Sequence[str] = (), min_length: int = 3) -> list[str]:
    """Whole alphabetic words of a tokenizer's vocabulary (no ``##`` pieces, no ``[SPECIAL]``), sorted."""
    excluded = {w.lower() for w in exclude}
    return sorted(
        w for w in vocab if w.isalpha() and w.isascii() and len(w) >= min_length and w.lower() not in excluded
    )
