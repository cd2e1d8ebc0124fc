"""LM curation: logged generations, ratings and corrections become a registered prompt-completion dataset.

Per generation, the latest rating and the latest correction count. A corrected completion replaces
the model's (tier ``corrected``); a completion rated at least ``min_rating`` is kept as it is (tier
``rated``); one rated below is dropped; an unrated one is kept (tier ``unrated``) unless
``keep_unrated`` is off. A completion judged wrong (corrected, or rated low) is dropped wherever else
the same prompt got it (e.g. repeated greedy requests). Logs that kept only a hash are skipped, as in
classification curation.
Pairs are de-duplicated (case and whitespace folded) keeping the most trusted tier, and ordered by
tier, then by a hash of their text, so the same logs give the same dataset.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from fanbu.collect.lm_curated import LM_TIERS, LMCurateConfig, LMExample
from fanbu.collect.lm_dataset import write_collected_lm
from fanbu.collect.lm_store import Generation, GenerationFeedback
from fanbu.collect.store import LogStore
from fanbu.registry import DatasetRecord, Registry

__all__ = ["LMCurateConfig", "LMExample", "curate_lm", "select_lm_examples"]


def _fold(prompt: str, completion: str) -> tuple[str, str]:
    return " ".join(prompt.lower().split()), " ".join(completion.lower().split())


def _key(example: LMExample) -> tuple[str, str]:
    return _fold(example.prompt, example.completion)


def _wrong(feedback: tuple[int | None, str | None] | None, config: LMCurateConfig) -> bool:
    """Whether feedback judged the model's completion wrong: corrected, or rated below ``min_rating``."""
    if feedback is None:
        return False
    rating, correction = feedback
    return correction is not None or (rating is not None and rating < config.min_rating)


def _order(example: LMExample) -> tuple[int, str]:
    return LM_TIERS.index(example.tier), hashlib.sha256(example.text.encode("utf-8")).hexdigest()


def latest_feedback(feedback: list[GenerationFeedback]) -> dict[str, tuple[int | None, str | None]]:
    """Generation id -> (latest rating, latest correction); feedback comes oldest first."""
    latest: dict[str, tuple[int | None, str | None]] = {}
    for item in feedback:
        rating, correction = latest.get(item.generation_id, (None, None))
        latest[item.generation_id] = (
            item.rating if item.rating is not None else rating,
            item.completion if item.completion is not None else correction,
        )
    return latest


def select_lm_examples(
    generations: list[Generation],
    feedback: dict[str, tuple[int | None, str | None]],
    config: LMCurateConfig,
) -> tuple[list[LMExample], Counter[str]]:
    """The kept examples (best tier first, within the quota) and counts of what was dropped and why."""
    dropped: Counter[str] = Counter()
    best: dict[tuple[str, str], LMExample] = {}
    judged_wrong = {  # a completion someone corrected or rated low is dropped wherever else it was logged
        _fold(g.prompt, g.final.text)
        for g in generations
        if g.prompt is not None and g.final.text is not None and _wrong(feedback.get(g.id), config)
    }
    for gen in generations:
        rating, correction = feedback.get(gen.id, (None, None))
        completion = correction if correction is not None else gen.final.text
        if gen.prompt is None or completion is None:
            dropped["hash_only"] += 1
            continue
        if correction is not None:
            tier = "corrected"
        elif rating is not None:
            if rating < config.min_rating:
                dropped["low_rating"] += 1
                continue
            tier = "rated"
        elif config.keep_unrated:
            tier = "unrated"
        else:
            dropped["unrated"] += 1
            continue
        example = LMExample(gen.prompt, completion, tier, gen.id, gen.target, gen.endpoint)
        key = _key(example)
        if tier != "corrected" and key in judged_wrong:
            dropped["judged_wrong"] += 1
            continue
        current = best.get(key)
        if current is not None:
            dropped["duplicate"] += 1
        if current is None or LM_TIERS.index(tier) <= LM_TIERS.index(current.tier):
            best[key] = example
    ordered = sorted(best.values(), key=_order)
    dropped["over_quota"] += max(0, len(ordered) - config.quota)
    return ordered[: config.quota], dropped


def curate_lm(
    registry: Registry, config: LMCurateConfig, store: LogStore | None = None
) -> tuple[DatasetRecord, dict[str, Any]]:
    """Curate the logged generations of ``registry``'s database into a registered LM dataset."""
    own = store is None
    store = store or LogStore(registry.url)
    try:
        generations = store.generations(config.targets)
        feedback = latest_feedback(store.generation_feedback())
    finally:
        if own:
            store.close()
    examples, dropped = select_lm_examples(generations, feedback, config)
    models = sorted({a.model_id for g in generations for a in g.answers})
    return write_collected_lm(registry, config, examples, dropped, models, len(generations))
