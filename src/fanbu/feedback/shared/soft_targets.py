"""The swarm's soft labels: per head, which texts, which teachers, and the mixed target distribution.

For each domain head the experts label a pool of transfer texts (the domain's public slice, or every
domain's, plus unlabeled text). Teacher choice per sample:

* ``by_domain``: the head's own expert labels every text of its pool, weight 1;
* ``confidence`` / ``entropy``: every selected expert that has the head scores the text; its weight
  is its max-probability or ``1 - H(p) / log C``, teachers under ``threshold`` are dropped
  (selective transfer, as in FedMKT), and the target is the weighted mixture of the kept teachers'
  temperature-softened distributions.

Teacher outputs come from :class:`~fanbu.train.distill.teacher.TeacherCache`, saved per expert so
another strategy on the same context reuses them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import CheckpointError
from fanbu.feedback.shared.context import FeedbackContext
from fanbu.io import sha256_json
from fanbu.models.encoder import EncoderHandle
from fanbu.train.distill.losses import UNLABELED
from fanbu.train.distill.teacher import TeacherCache, texts_fingerprint

UNLABELED_SOURCE = "unlabeled"


class TeacherConfig(Strict):
    """How the experts label the transfer texts."""

    choice: Literal["by_domain", "confidence", "entropy"] = Field(
        "by_domain",
        description="by_domain: the head's own expert labels it; confidence / entropy: every expert with "
        "the head scores each text, weighted by max-probability / negative entropy.",
    )
    threshold: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Drop a teacher for a sample when its weight is below this (selective transfer).",
    )
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the soft targets.")
    pool: Literal["own", "all"] = Field(
        "own", description="own: a head learns on its domain's public texts; all: on every domain's."
    )
    use_unlabeled: bool = Field(True, description="Add the context's unlabeled texts to every head's pool.")
    unlabeled_per_head: int | None = Field(
        None,
        ge=1,
        description="Give each head at most this many unlabeled texts: those nearest its own transfer texts "
        "(cosine of the champion's centred pooled features to their centroid); null: every unlabeled text.",
    )
    use_collected: bool = Field(
        True, description="Add the texts each pooled domain's small model met while serving (ctx.collected)."
    )
    cross_heads: bool = Field(
        False,
        description="confidence / entropy: experts also teach other domains' heads they carry with the same "
        "labels (only for experts trained on those tasks); false: each expert teaches its own head.",
    )
    batch_size: int = Field(64, ge=1, description="Texts per teacher forward pass when building the cache.")

    @model_validator(mode="after")
    def _check(self) -> TeacherConfig:
        if self.choice == "by_domain" and self.cross_heads:
            raise ValueError("cross_heads needs choice confidence or entropy to weigh the teachers of a head")
        if self.choice == "by_domain" and self.threshold > 0:
            raise ValueError(
                "threshold only applies to choice confidence or entropy (by_domain gives every sample "
                "weight 1); set threshold: 0 or choose confidence / entropy"
            )
        return self


@dataclass
class SoftTargets:
    """One head's training rows: texts, optional hard labels and the swarm's soft targets.

    Attributes:
        texts: The texts, one per row.
        sources: Where each text came from: a domain name or ``"unlabeled"``.
        labels: ``(n,)`` hard labels, ``-1`` where the text has none.
        probs: ``(n, num_labels)`` the kept teachers' mixed distribution at the temperature.
        weights: ``(n,)`` weight of the soft term per row, 0 where no teacher was kept.
        features: Expert -> ``(pooled (n, width), weight (n,))`` for feature matching.
    """

    texts: list[str]
    sources: list[str]
    labels: Tensor
    probs: Tensor
    weights: Tensor
    features: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: Sequence[int]) -> SoftTargets:
        """The rows at ``indices`` (repeats allowed), in that order."""
        rows = torch.tensor(list(indices), dtype=torch.long)
        return SoftTargets(
            [self.texts[i] for i in indices],
            [self.sources[i] for i in indices],
            self.labels[rows],
            self.probs[rows],
            self.weights[rows],
            {e: (pooled[rows], w[rows]) for e, (pooled, w) in self.features.items()},
        )

    def stats(self) -> dict[str, float]:
        """Rows, hard-labelled rows, rows with a soft target and their mean weight."""
        soft = self.weights > 0
        return {
            "rows": float(len(self)),
            "labelled": float((self.labels != UNLABELED).sum()),
            "soft": float(soft.sum()),
            "mean_weight": float(self.weights[soft].mean()) if bool(soft.any()) else 0.0,
        }


def head_pool(
    ctx: FeedbackContext, head: str, config: TeacherConfig, unlabeled: Sequence[str] | None = None
) -> tuple[list[str], list[str], list[int]]:
    """Texts, sources and hard labels (-1: none) a head learns on.

    ``unlabeled`` replaces the context's unlabeled texts (see :func:`nearest_unlabeled`).
    """
    names = [head] if config.pool == "own" else sorted(n for n in ctx.public if n in ctx.domains)
    texts, sources, labels = [], [], []
    for name in names:
        public_texts, public_labels = ctx.public.get(name, ([], []))
        texts += list(public_texts)
        sources += [name] * len(public_texts)
        own = name == head
        labels += [int(y) if own else UNLABELED for y in public_labels]
        if config.use_collected:
            served = ctx.collected.get(name, [])
            texts += list(served)
            sources += [name] * len(served)
            labels += [UNLABELED] * len(served)
    if config.use_unlabeled:
        extra = list(ctx.unlabeled if unlabeled is None else unlabeled)
        texts += extra
        sources += [UNLABELED_SOURCE] * len(extra)
        labels += [UNLABELED] * len(extra)
    return texts, sources, labels


def nearest_unlabeled(ctx: FeedbackContext, own: Mapping[str, Sequence[str]], n: int) -> dict[str, list[str]]:
    """Per head, the ``n`` unlabeled texts of ``ctx`` nearest the head's ``own`` transfer texts.

    Nearness is the cosine between an unlabeled text's pooled feature under the champion and the
    centroid of the head's texts' features, every feature first centred on the mean of all of them
    (mean-pooled sentence features share a large common component). The chosen texts keep the
    context's order. A head with no texts of its own, or a context with at most ``n`` unlabeled texts,
    gets all of them.
    """
    pool = list(ctx.unlabeled)
    if len(pool) <= n:
        return {head: pool for head in own}
    heads = sorted(own)
    features = champion_features(ctx, pool + [t for head in heads for t in own[head]])  # (texts, hidden)
    features = torch.nn.functional.normalize(features - features.mean(dim=0), dim=-1)
    candidates, start = features[: len(pool)], len(pool)  # (len(pool), hidden)
    chosen: dict[str, list[str]] = {}
    for head in heads:
        mine = features[start : start + len(own[head])]  # (len(own[head]), hidden)
        start += len(own[head])
        if not len(mine):
            chosen[head] = pool
            continue
        centroid = torch.nn.functional.normalize(mine.mean(dim=0), dim=0)  # (hidden,)
        top = torch.topk(candidates @ centroid, n).indices.sort().values
        chosen[head] = [pool[int(i)] for i in top]
    return chosen


def champion_features(ctx: FeedbackContext, texts: Sequence[str]) -> Tensor:
    """The champion's pooled features of ``texts``, ``(n, hidden)``.

    Each text is encoded once per context: strategies run on one context (and copies of it made
    with :func:`dataclasses.replace`, which share :attr:`~FeedbackContext.memo`) reuse the features.
    """
    store: dict[str, Tensor] = ctx.memo.setdefault(("champion_features", id(ctx.large.model)), {})
    missing = list(dict.fromkeys(t for t in texts if t not in store))
    if missing:
        features, _ = ctx.large.encode(missing)  # (len(missing), hidden)
        store.update(zip(missing, features, strict=True))
    if not texts:
        return torch.zeros(0, ctx.large.model.hidden_size)
    return torch.stack([store[t] for t in texts])


def teacher_weights(logits: Tensor, choice: str) -> Tensor:
    """Per-sample weight ``(n,)`` of a teacher from its logits ``(n, C)`` (at temperature 1)."""
    probs = torch.softmax(logits.float(), dim=-1)  # (n, C)
    if choice == "by_domain":
        return torch.ones(logits.shape[0])
    if choice == "confidence":
        return probs.max(dim=-1).values
    classes = logits.shape[-1]
    if classes < 2:
        return torch.ones(logits.shape[0])
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)  # (n,)
    return 1.0 - entropy / math.log(classes)


def cache_name(expert: str, tasks: Mapping[str, Sequence[str]]) -> str:
    """The file an expert's outputs on these tasks' texts are kept in: one per text set, so that
    strategies labelling different texts share a directory without overwriting each other."""
    key = sha256_json(sorted((task, texts_fingerprint(texts)) for task, texts in tasks.items()))
    return f"teacher-{expert}-{key[:16]}.safetensors"


def load_or_build_cache(
    expert: EncoderHandle,
    tasks: Mapping[str, Sequence[str]],
    hidden: bool,
    path: Path | None,
    batch_size: int,
) -> TeacherCache:
    """The expert's saved cache when it matches these texts and weights; otherwise a new one (saved)."""
    if path is not None and path.is_file():
        try:
            cache = TeacherCache.load(path, tasks, expert)
            if cache.has_hidden or not hidden:
                return cache
        except CheckpointError:
            pass  # built for other texts or another expert: rebuild below
    cache = TeacherCache.build(expert, tasks, batch_size=batch_size, hidden=hidden)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.save(path)
    return cache


def teachers_of(
    head: str, experts: Mapping[str, EncoderHandle], reference: Sequence[str], cross_heads: bool
) -> list[str]:
    """The experts that label ``head``: its own, or (``cross_heads``) every expert with a matching head."""
    if not cross_heads:
        return [head] if head in experts else []
    return [name for name, e in sorted(experts.items()) if list(e.labels.get(head, [])) == list(reference)]


def build_targets(
    ctx: FeedbackContext,
    experts: Mapping[str, EncoderHandle],
    config: TeacherConfig,
    features: bool = False,
    cache_dir: Path | None = None,
) -> dict[str, SoftTargets]:
    """Soft targets for every domain head of ``ctx.large`` from the (selected) ``experts``.

    Rows with neither a hard label nor a kept teacher are dropped, since they carry no signal; heads
    left without rows are left out.
    """
    unlabeled: dict[str, list[str]] = {}
    if config.use_unlabeled and config.unlabeled_per_head is not None:
        without = config.model_copy(update={"use_unlabeled": False})
        own = {head: head_pool(ctx, head, without)[0] for head in ctx.domains}
        unlabeled = nearest_unlabeled(ctx, own, config.unlabeled_per_head)
    pools = {head: head_pool(ctx, head, config, unlabeled.get(head)) for head in ctx.domains}
    pools = {head: pool for head, pool in pools.items() if pool[0]}
    teachers = {h: teachers_of(h, experts, ctx.large.labels[h], config.cross_heads) for h in pools}
    outputs: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}
    for name, expert in sorted(experts.items()):
        tasks = {h: pools[h][0] for h in pools if name in teachers[h]}
        if not tasks:
            continue
        path = cache_dir / cache_name(name, tasks) if cache_dir is not None else None
        cache = load_or_build_cache(expert, tasks, features, path, config.batch_size)
        for head, texts in tasks.items():
            rows = torch.arange(len(texts))
            pooled = cache.pooled(head, rows) if features else torch.zeros(len(texts), 0)
            outputs[(name, head)] = (cache.logits(head, rows), pooled)
    mixed = {h: _mix(h, pools[h], teachers[h], outputs, config, len(ctx.large.labels[h])) for h in pools}
    return {head: targets for head, targets in mixed.items() if len(targets)}


def _mix(
    head: str,
    pool: tuple[list[str], list[str], list[int]],
    names: Sequence[str],
    outputs: Mapping[tuple[str, str], tuple[Tensor, Tensor]],
    config: TeacherConfig,
    num_labels: int,
) -> SoftTargets:
    """Mix the kept teachers of one head into its :class:`SoftTargets`."""
    texts, sources, labels = pool
    n = len(texts)
    total, weights = torch.zeros(n), torch.zeros(n)
    mixed = torch.zeros(n, num_labels)  # (n, C)
    feats: dict[str, tuple[Tensor, Tensor]] = {}
    for name in names:
        logits, pooled = outputs[(name, head)]  # (n, C), (n, width)
        w = teacher_weights(logits, config.choice)  # (n,)
        w = torch.where(w >= config.threshold, w, torch.zeros_like(w))
        mixed += torch.softmax(logits.float() / config.temperature, dim=-1) * w[:, None]
        total += w
        weights = torch.maximum(weights, w)
        if pooled.shape[-1]:
            feats[name] = (pooled, w)
    probs = mixed / total.clamp_min(1e-12)[:, None]  # (n, C); all-zero rows where no teacher was kept
    targets = SoftTargets(
        list(texts), list(sources), torch.tensor(labels, dtype=torch.long), probs, weights, feats
    )
    keep = [i for i in range(n) if weights[i] > 0 or labels[i] != UNLABELED]
    return targets if len(keep) == n else targets.select(keep)


def balanced_indices(sources: Sequence[str], size: int, seed: int) -> list[int]:
    """``size`` row indices with every source equally represented (smaller sources oversampled)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        groups.setdefault(source, []).append(index)
    per_group = -(-size // len(groups))
    picked: list[int] = []
    for _, rows in sorted(groups.items()):
        repeats = -(-per_group // len(rows))
        cycle = np.concatenate([rng.permutation(rows) for _ in range(repeats)])
        picked += [int(i) for i in cycle[:per_group]]
    return [picked[i] for i in rng.permutation(len(picked))[:size]]
