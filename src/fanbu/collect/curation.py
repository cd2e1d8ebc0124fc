"""Curation: the serving logs become a versioned, fingerprinted dataset in the registry.

Per domain (a head), labelled examples are taken in order of trust until the quota is full:
human-corrected labels (and predictions a user rated 4-5), then confident pseudo-labels (the answer's
top probability at least ``min_confidence``, not escalated, not rated 1-2), then hard examples
(escalated, or below ``hard_below``) labelled by the large model: the cascade's logged large answer,
or ``label_with``'s when set. Texts are de-duplicated (case and whitespace folded) keeping the most
trusted label; logs that kept only a hash are skipped. What is left becomes unlabeled text.

The settings and result types (:class:`CurateConfig`, :class:`Curated`, :class:`Example`) are in
:mod:`fanbu.collect.curated`; they are imported here too.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from fanbu.collect.curated import TIERS, CurateConfig, Curated, Example
from fanbu.collect.dataset import write_collected
from fanbu.collect.store import LogStore, Prediction
from fanbu.models.encoder import read_handle_settings
from fanbu.models.loading import load_predictor
from fanbu.registry import DatasetRecord, Registry
from fanbu.registry.workspace import Workspace

__all__ = ["TIERS", "CurateConfig", "Curated", "Example", "curate", "select_examples"]


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _order(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def select_examples(
    predictions: list[Prediction], feedback: dict[str, tuple[str | None, int | None]], config: CurateConfig
) -> tuple[dict[str, list[Example]], list[Prediction], dict[str, list[str]], int]:
    """Tier each logged prediction; returns (domain -> examples, hard ones without a label, unlabeled, skipped)."""
    best: dict[tuple[str, str], Example] = {}
    unlabeled: dict[str, dict[str, str]] = defaultdict(dict)
    needs_label: dict[tuple[str, str], Prediction] = {}
    skipped = 0
    for pred in predictions:  # oldest first: a later example of the same tier replaces an earlier one
        if pred.text is None:
            skipped += 1
            continue
        if not pred.text.strip():
            continue
        key = (pred.head, _key(pred.text))
        label, rating = feedback.get(pred.id, (None, None))
        final = pred.final
        large = next((a for a in pred.answers if a.role == "large"), None)
        example: Example | None = None
        if label is not None or (rating is not None and rating >= 4):
            example = Example(pred.head, pred.text, label or final.label, "human", pred.id)
        elif rating is not None and rating <= 2:
            pass  # the answer was judged wrong and nobody said what is right: unlabeled text
        elif large is not None:
            example = Example(pred.head, pred.text, large.label, "hard", pred.id)
        elif final.confidence >= config.min_confidence:
            example = Example(pred.head, pred.text, final.label, "pseudo", pred.id)
        elif final.confidence < config.hard_below and config.label_with is not None:
            needs_label[key] = pred
        if example is None:
            unlabeled[pred.head][key[1]] = pred.text
            continue
        current = best.get(key)
        if current is None or TIERS.index(example.tier) <= TIERS.index(current.tier):
            best[key] = example
    by_domain: dict[str, list[Example]] = defaultdict(list)
    for example in best.values():
        by_domain[example.domain].append(example)
    labeled_keys = set(best)
    hard = [p for k, p in needs_label.items() if k not in labeled_keys]
    left = {
        d: [t for k, t in texts.items() if (d, k) not in labeled_keys and (d, k) not in needs_label]
        for d, texts in unlabeled.items()
    }
    return dict(by_domain), hard, left, skipped


def curate(
    registry: Registry, config: CurateConfig, store: LogStore | None = None
) -> tuple[DatasetRecord, dict[str, Any]]:
    """Curate the logs of ``registry``'s database into a registered dataset; returns it and its counts."""
    own = store is None
    store = store or LogStore(registry.url)
    try:
        predictions = store.predictions(config.domains)
        if config.targets is not None:
            predictions = [p for p in predictions if p.target in set(config.targets)]
        feedback: dict[str, tuple[str | None, int | None]] = {}
        for item in store.feedback():  # the latest label and the latest rating win
            label, rating = feedback.get(item.prediction_id, (None, None))
            feedback[item.prediction_id] = (
                item.label or label,
                item.rating if item.rating is not None else rating,
            )
    finally:
        if own:
            store.close()
    by_domain, hard, unlabeled, skipped = select_examples(predictions, feedback, config)
    if hard and config.label_with is not None:
        for example in _label_hard(registry, config, hard):
            by_domain.setdefault(example.domain, []).append(example)
    curated = Curated(skipped_hash_only=skipped)
    for domain in sorted(set(by_domain) | set(unlabeled)):
        # within a tier, a fixed pseudo-random order (the text's hash): the same logs give the same dataset,
        # whatever ids the server drew, and a quota keeps no alphabetical bias
        examples = sorted(by_domain.get(domain, []), key=lambda e: (TIERS.index(e.tier), _order(e.text)))
        curated.labeled[domain] = examples[: config.quota]
        curated.unlabeled[domain] = sorted(unlabeled.get(domain, []))[: config.unlabeled_quota]
    curated.label_names = _label_names(registry, predictions)
    return write_collected(registry, config, curated)


def _label_hard(registry: Registry, config: CurateConfig, hard: list[Prediction]) -> list[Example]:
    """Label hard examples with ``config.label_with`` (loaded once)."""
    record = Workspace(registry).resolve(str(config.label_with))
    predictor = load_predictor(record.path, config.runtime)
    labels = predictor.labels
    examples = []
    by_head: dict[str, list[Prediction]] = defaultdict(list)
    for pred in hard:
        by_head[pred.head].append(pred)
    for head, preds in by_head.items():
        if head not in labels:
            continue
        indices = predictor.predict([p.text or "" for p in preds], head)
        examples += [
            Example(head, p.text or "", labels[head][int(i)], "hard", p.id)
            for p, i in zip(preds, indices, strict=True)
        ]
    return examples


def _label_names(registry: Registry, predictions: list[Prediction]) -> dict[str, list[str]]:
    """Each domain's label names, in head order, from the models that answered (first one wins)."""
    names: dict[str, list[str]] = {}
    for model_id in sorted({p.final.model_id for p in predictions}):
        for head, labels in read_handle_settings(Path(registry.get_model(model_id).path))["labels"].items():
            names.setdefault(head, [str(n) for n in labels])
    return names
