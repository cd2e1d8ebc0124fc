"""Federated mutual knowledge transfer (FedMKT, Fan et al. 2024, https://arxiv.org/abs/2406.02224).

Clients and server share no weights, only log-probabilities on the public texts of each domain, so
every client may own a model of its own shape (a pruned student of any width). One round:

1. each client distils the server's knowledge of its domain (when there is some yet) together with its
   private labels, then sends its log-probabilities on the domain's public texts;
2. per domain the server aggregates the clients' log-probabilities with a robust rule
   (:func:`~fanbu.federated.robust.aggregate_logits`), keeps per text what passes the selection
   (confidence, and agreement with the public label: FedMKT's selective transfer), and distils it into
   the large model through the one training loop;
3. the large model's temperature-softened distribution on each domain's public texts goes back to
   that domain's clients in the next round (and in a last, distil-only round).

Both directions use the soft-label loss of swarm distillation (:class:`SoftLabelLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fanbu.federated.recipe import FederatedRecipe, MKTConfig
from fanbu.federated.robust import aggregate_logits
from fanbu.feedback.shared.context import FeedbackContext, Labeled
from fanbu.feedback.shared.fit import fit_candidate
from fanbu.feedback.shared.soft_losses import SoftLabelLoss
from fanbu.feedback.shared.soft_targets import SoftTargets
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig
from fanbu.train.distill.losses import UNLABELED, MaskedTaskLoss


@dataclass
class Knowledge:
    """Soft labels for one domain's public texts: ``probs`` ``(n, C)`` at the temperature, ``weights`` ``(n,)``."""

    probs: np.ndarray
    weights: np.ndarray

    def stats(self) -> dict[str, float]:
        """Share of texts kept and their mean weight."""
        kept = self.weights > 0
        return {
            "kept": float(kept.mean()),
            "mean_weight": float(self.weights[kept].mean()) if kept.any() else 0.0,
        }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, ``(n, C)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def log_probs(handle: EncoderHandle, head: str, texts: Sequence[str]) -> np.ndarray:
    """The model's log-probabilities ``(n, C)`` on ``texts`` (what a client sends)."""
    probs = handle.predict_proba(list(texts), head)  # (n, C)
    return np.log(np.clip(probs, 1e-12, None)).astype(np.float32)


def select(aggregated: np.ndarray, labels: Sequence[int], config: MKTConfig) -> Knowledge:
    """Soft targets from aggregated log-probabilities ``(n, C)``, with FedMKT's selective transfer.

    ``none`` keeps every text with weight 1; ``confidence`` weighs a text by the aggregate's top
    probability and drops it under ``threshold``; ``agreement`` also drops texts whose aggregate
    disagrees with the public label (garbage that survived aggregation rarely agrees).
    """
    probs = softmax(aggregated, config.temperature)  # (n, C)
    if config.selection == "none":
        weights = np.ones(len(probs), dtype=np.float32)
    else:
        confident = softmax(aggregated).max(axis=-1)  # (n,)
        weights = np.where(confident >= config.threshold, confident, 0.0).astype(np.float32)
        if config.selection == "agreement":
            y = np.asarray(labels)
            agree = (aggregated.argmax(axis=-1) == y) | (y == UNLABELED)
            weights = np.where(agree, weights, 0.0).astype(np.float32)
    return Knowledge(probs, weights)


def aggregate_domain(
    stack: np.ndarray, weights: np.ndarray, labels: Sequence[int], recipe: FederatedRecipe
) -> Knowledge:
    """A domain's clients' log-probabilities ``(clients, n, C)`` -> the selected soft targets."""
    f = recipe.robust.tolerated(stack.shape[0], recipe.attack.fraction)
    aggregated = aggregate_logits(stack, recipe.robust.rule, f, weights)  # (n, C)
    return select(aggregated, labels, recipe.mkt)


def _targets(texts: list[str], labels: list[int], knowledge: Knowledge | None, offset: int) -> SoftTargets:
    """Soft targets for ``texts`` whose rows from ``offset`` on carry ``knowledge`` (the rest none)."""
    n = len(texts)
    width = knowledge.probs.shape[1] if knowledge is not None else 1
    probs, weights = torch.zeros(n, width), torch.zeros(n)
    if knowledge is not None:
        probs[offset:] = torch.from_numpy(knowledge.probs)
        weights[offset:] = torch.from_numpy(knowledge.weights)
    sources = ["private"] * offset + ["public"] * (n - offset)
    return SoftTargets(list(texts), sources, torch.tensor(labels, dtype=torch.long), probs, weights)


def client_distil(
    handle: EncoderHandle,
    head: str,
    private: Labeled,
    public_texts: Sequence[str],
    knowledge: Knowledge | None,
    config: MKTConfig,
    train: TrainConfig,
) -> None:
    """One client round (in place): private labels, plus the server's knowledge on the public texts."""
    texts, labels = list(private[0]), [int(y) for y in private[1]]
    alpha = config.client_alpha if knowledge is not None else 0.0
    if knowledge is not None:
        texts += list(public_texts)
        labels += [UNLABELED] * len(public_texts)
    strategies: list = [MaskedTaskLoss(1.0 - alpha)]
    if knowledge is not None and alpha > 0:
        targets = _targets(texts, labels, knowledge, len(private[0]))
        strategies.append(SoftLabelLoss({head: targets}, alpha, config.temperature))
    train_heads(handle, {head: (texts, labels)}, train, terms=strategies, description=f"fedmkt-{head}")
    handle.model.eval()


def server_distil(
    candidate: EncoderHandle,
    champion: EncoderHandle,
    knowledge: dict[str, Knowledge],
    public: dict[str, Labeled],
    validation: dict[str, Labeled],
    config: MKTConfig,
    seed: int,
) -> dict[str, float]:
    """Distil the selected client knowledge of every domain into ``candidate`` (in place).

    Loss: ``(1 - server_alpha) * CE(public labels) + server_alpha * weighted KL(knowledge)``, plus the
    continual safeguards of ``config.continual`` against the champion (LwF, EWC, replay) for the heads
    no client teaches. Early stopping and best-weight restore use the validation slices.
    """
    train, targets = {}, {}
    for head, know in sorted(knowledge.items()):
        texts, labels = public[head]
        train[head] = (list(texts), [int(y) for y in labels])
        targets[head] = _targets(list(texts), list(labels), know, 0)
    ctx = FeedbackContext(
        large=champion, experts={}, public=dict(public), validation=dict(validation), seed=seed
    )
    strategies = [MaskedTaskLoss(1.0 - config.server_alpha)]
    if config.server_alpha > 0:
        strategies.append(SoftLabelLoss(targets, config.server_alpha, config.temperature))
    result = fit_candidate(
        candidate,
        ctx,
        train,
        strategies,
        config.server_train.model_copy(update={"seed": seed}),
        config.continual,
        "fedmkt-server",
        evaluate_on=sorted(knowledge),
    )
    return dict(result.last_metrics)


def server_knowledge(
    handle: EncoderHandle, public: dict[str, Labeled], temperature: float
) -> dict[str, Knowledge]:
    """The large model's softened distribution on every domain's public texts (sent to the clients)."""
    out = {}
    for head, (texts, _) in sorted(public.items()):
        logits = log_probs(handle, head, texts)  # (n, C)
        out[head] = Knowledge(softmax(logits, temperature), np.ones(len(texts), dtype=np.float32))
    return out
