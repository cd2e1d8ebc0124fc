"""Cheap measurements of a candidate taken before any training: its size and its batch-1 latency."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fanbu.derive.search.config import SearchError
from fanbu.evaluate import measure_latency, param_count


def candidate_params(candidate: Any) -> int:
    """Parameters of a candidate: an ``nn.Module`` or a handle with a ``.model`` module (ties counted once).

    Raises:
        SearchError: the candidate is neither; pass ``count_params`` to :func:`search`.
    """
    if isinstance(candidate, nn.Module):
        return param_count(candidate)
    model = getattr(candidate, "model", None)
    if isinstance(model, nn.Module):
        return param_count(model)
    raise SearchError(
        f"cannot count the parameters of a {type(candidate).__name__}: make build return an nn.Module "
        "or a handle with a .model module, or pass count_params= to search()"
    )


def _predict(candidate: Any, head: str | None) -> Callable[[Sequence[str]], Any]:
    """A ``predict(texts)`` for a handle: its head's probabilities, else a plain forward pass."""
    labels = getattr(candidate, "labels", None)
    if head is None and labels:
        head = next(iter(labels))
    if head is not None:
        return lambda texts: candidate.predict_proba(list(texts), head)
    if not hasattr(candidate, "tokenize") or not isinstance(getattr(candidate, "model", None), nn.Module):
        raise SearchError(
            f"cannot time a {type(candidate).__name__}: batch1_latency needs a handle with .tokenize and "
            ".model (EncoderHandle, CausalLMHandle); pass your own measure_latency to search()"
        )

    def forward(texts: Sequence[str]) -> Any:
        candidate.model.eval()
        with torch.no_grad():
            return candidate.model(**candidate.tokenize(list(texts)))  # (1, seq, vocab) for a causal LM

    return forward


def batch1_latency(
    texts: Sequence[str], head: str | None = None, warmup: int = 3, iterations: int = 20
) -> Callable[[Any], float]:
    """A ``measure_latency`` for :func:`search`: a handle's batch-1 p50 latency in ms on ``texts``.

    Encoders are timed through ``predict_proba`` on ``head`` (default: their first head), causal LMs
    through a forward pass of the tokenized text.
    """
    if len(texts) == 0:
        raise SearchError("batch1_latency needs at least one example text to time candidates on")

    def measure(candidate: Any) -> float:
        stats = measure_latency(
            _predict(candidate, head), texts, batch_size=1, warmup=warmup, iterations=iterations
        )
        return stats.p50_ms

    return measure


def probe_accuracy(
    candidate: Any, train: tuple[Sequence[str], Sequence[int]], validation: tuple[Sequence[str], Sequence[int]]
) -> float:
    """A training-free score of a pruned encoder: a logistic regression on its frozen pooled features of
    ``train``, scored on ``validation`` (accuracy). Cheap (forward passes only), so a search can try many
    shapes; it ranks how much of the domain's signal a shape keeps before any recovery training.

    Raises:
        SearchError: the candidate has no ``encode``, or ``train`` holds a single label.
    """
    from sklearn.linear_model import LogisticRegression

    if not callable(getattr(candidate, "encode", None)):
        raise SearchError(f"probe scoring needs an encoder handle with .encode, got {type(candidate).__name__}")
    if len(set(train[1])) < 2:
        raise SearchError("probe scoring needs training examples of at least two labels; raise trial_examples")
    fit_x, _ = candidate.encode(list(train[0]))  # (n, hidden)
    val_x, _ = candidate.encode(list(validation[0]))
    model = LogisticRegression(max_iter=2000).fit(fit_x.numpy(), list(train[1]))
    return float((model.predict(val_x.numpy()) == list(validation[1])).mean())
