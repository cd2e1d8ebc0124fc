"""The consensus report: which words the swarm agrees on and which one model alone relies on, per domain.

Every model that carries a domain's head reads that domain's texts through it (the experts that have the
head and, by default, the champion as a neutral reader): integrated gradients give each reader's mean
attribution per class and word, in units of its own mean absolute word attribution
(:class:`~fanbu.attribution.integrated.WordScores`).

* a **general rule** (candidate causal rule): a (class, word) every reader saw at least ``min_count``
  times and scores with the same sign, each at least ``threshold`` in absolute value;
* a **shortcut** (candidate spurious feature): a (class, word) one reader scores at least ``threshold``
  towards the class while every other reader stays below it; ranked by the margin between that reader's
  score and the highest of the others'. A word is listed once per domain, at its best entry.

A domain read by fewer than two models has neither list (there is nothing to agree or disagree with).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from fanbu.attribution.integrated import IGConfig, WordScores, word_scores
from fanbu.config import Strict
from fanbu.models.encoder import EncoderHandle

CHAMPION = "champion"


class ConsensusConfig(Strict):
    """How the consensus report reads the swarm."""

    threshold: float = Field(
        2.0,
        gt=0,
        description="Reliance, in units of a reader's mean absolute word attribution, that counts as using "
        "a word for a class (rules: every reader at least this; shortcuts: one reader).",
    )
    min_count: int = Field(3, ge=1, description="Occurrences of a (class, word) a reader needs to score it.")
    top: int = Field(20, ge=1, description="Entries kept per list and domain in the report.")
    champion: bool = Field(
        True, description="The champion reads every domain's head too (a neutral reader beside the experts)."
    )
    texts: int = Field(200, ge=1, description="Texts per domain attributed (a seeded sample of them).")
    ig: IGConfig = Field(default_factory=IGConfig, description="Integrated-gradient settings.")


def sample_texts(texts: Sequence[str], size: int, seed: int) -> list[str]:
    """At most ``size`` of ``texts``, a seeded sample kept in their order."""
    if len(texts) <= size:
        return list(texts)
    chosen = np.random.default_rng(seed).choice(len(texts), size=size, replace=False)
    return [texts[i] for i in sorted(chosen.tolist())]


def domain_lists(readers: Mapping[str, WordScores], config: ConsensusConfig) -> dict[str, Any]:
    """The general rules and shortcuts of one domain from its readers' word scores."""
    names = sorted(readers)
    if len(names) < 2:
        return {
            "readers": names,
            "rules": [],
            "shortcuts": [],
            "note": "fewer than two models read this head",
        }
    labels = readers[names[0]].labels
    keys = sorted({key for scores in readers.values() for key in scores.counts})
    rules: dict[str, dict[str, Any]] = {}
    shortcuts: dict[str, dict[str, Any]] = {}
    for label, word in keys:
        counts = {n: readers[n].counts.get((label, word), 0) for n in names}
        scores = {n: readers[n].score(label, word) if counts[n] >= config.min_count else 0.0 for n in names}
        entry = {"word": word, "label": labels[label], "scores": scores, "counts": counts}
        signs = {np.sign(s) for s in scores.values()}
        if min(counts.values()) >= config.min_count and len(signs) == 1 and 0 not in signs:
            strength = min(abs(s) for s in scores.values())
            if strength >= config.threshold and strength > rules.get(word, {}).get("strength", -1.0):
                rules[word] = {**entry, "strength": strength, "sign": int(signs.pop())}
        strong = [n for n in names if scores[n] >= config.threshold]
        if len(strong) == 1:
            reader = strong[0]
            margin = scores[reader] - max(0.0, *(scores[n] for n in names if n != reader))
            if margin > shortcuts.get(word, {}).get("margin", -1.0):
                shortcuts[word] = {**entry, "reader": reader, "margin": margin}
    ranked_rules = sorted(rules.values(), key=lambda e: (-e["strength"], e["word"]))[: config.top]
    ranked = sorted(shortcuts.values(), key=lambda e: (-e["margin"], e["word"]))[: config.top]
    return {"readers": names, "rules": ranked_rules, "shortcuts": ranked}


def consensus_report(
    experts: Mapping[str, EncoderHandle],
    texts: Mapping[str, Sequence[str]],
    config: ConsensusConfig,
    champion: EncoderHandle | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Attribute each domain's texts with every model carrying its head; a JSON-able report per domain.

    Args:
        experts: Name -> expert (any that carries a domain's head reads it).
        texts: Domain -> the texts to attribute (a seeded sample of ``config.texts`` is taken).
        config: Thresholds and integrated-gradient settings.
        champion: Read every head too when ``config.champion`` is set.
        seed: Seeds the text samples.
    """
    models = dict(experts)
    if config.champion and champion is not None:
        models[CHAMPION] = champion
    domains: dict[str, Any] = {}
    for index, (domain, pool) in enumerate(sorted(texts.items())):
        chosen = sample_texts(list(pool), config.texts, seed + index)
        readers = {
            name: word_scores(model, domain, chosen, config.ig)
            for name, model in sorted(models.items())
            if domain in model.labels
        }
        lists = domain_lists(readers, config)
        lists["texts"] = len(chosen)
        lists["delta"] = {name: scores.delta for name, scores in readers.items()}
        lists["classes"] = {
            name: per_class(scores, config.min_count, config.top) for name, scores in readers.items()
        }
        domains[domain] = lists
    return {"domains": domains, "settings": config.model_dump(mode="json")}


def per_class(scores: WordScores, min_count: int, top: int) -> dict[str, list[dict[str, Any]]]:
    """A reader's strongest words per class (mean attribution in its units, with counts)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for (label, word), count in scores.counts.items():
        if count >= min_count:
            entry = {"word": word, "score": scores.score(label, word), "count": count}
            found.setdefault(scores.labels[label], []).append(entry)
    return {k: sorted(v, key=lambda e: -e["score"])[:top] for k, v in sorted(found.items())}


def shortcut_words(report: Mapping[str, Any], top: int) -> dict[str, list[str]]:
    """Domain -> the ``top`` highest-ranked shortcut words of a :func:`consensus_report`."""
    return {d: [e["word"] for e in lists["shortcuts"][:top]] for d, lists in report["domains"].items()}


def word_rank(report: Mapping[str, Any], domain: str, word: str) -> int | None:
    """1-based rank of ``word`` among ``domain``'s shortcuts (None when it is not listed)."""
    words = [e["word"] for e in report["domains"][domain]["shortcuts"]]
    return words.index(word.lower()) + 1 if word.lower() in words else None
