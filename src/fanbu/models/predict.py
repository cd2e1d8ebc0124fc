"""The one predictor protocol, and the length grouping every predictor batches with.

A predictor (a saved handle, an ONNX deployment, an int8 copy) answers ``predict_proba(texts, head)``.
A batch is padded to its longest text, so texts of mixed length run as one batch spend much of the
model's time on padding (about 30 % on 20 Newsgroups posts cut to 256 tokens). Every predictor
therefore runs its texts in runs of similar length (:func:`length_runs`) and puts the rows back in
the order of ``texts``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fanbu.errors import ModelError

CHARS_PER_TOKEN = 4  # about this many characters per token in English: longer texts fill max_length
PAD_SLACK = 1.25  # a run's longest text is at most this many times its shortest (in capped characters)


@runtime_checkable
class Predictor(Protocol):
    """What every servable model offers: label names per head, a token budget, class probabilities."""

    labels: dict[str, list[str]]
    max_length: int

    def predict_proba(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray: ...

    def predict(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray: ...


def length_runs(texts: Sequence[str], max_length: int, batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` in runs of similar length (longest first), each at most ``batch_size`` long.

    Length is counted in characters, capped at ``max_length * CHARS_PER_TOKEN`` (beyond it a text
    fills the token budget anyway); a run's longest text is at most ``PAD_SLACK`` times its shortest.
    """
    cap = max_length * CHARS_PER_TOKEN
    size = [max(1, min(len(t), cap)) for t in texts]
    runs: list[list[int]] = []
    for i in sorted(range(len(texts)), key=lambda i: -size[i]):
        if runs and len(runs[-1]) < batch_size and size[runs[-1][0]] <= PAD_SLACK * size[i]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def check_request(labels: dict[str, list[str]], head: str, batch_size: int) -> None:
    """Raise :class:`ModelError` for an unknown head or a batch size below one."""
    if head not in labels:
        raise ModelError(f"unknown head {head!r}; heads: {', '.join(labels) or 'none yet'}")
    if batch_size < 1:
        raise ModelError(f"batch_size must be at least 1, got {batch_size}")


def predict_in_runs(
    texts: Sequence[str],
    num_labels: int,
    max_length: int,
    batch_size: int,
    run: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """Class probabilities ``(n, num_labels)``: ``run`` on each length run, rows in the order of ``texts``."""
    probs = np.empty((len(texts), num_labels), dtype=np.float32)  # (n, num_labels)
    for indices in length_runs(texts, max_length, batch_size):
        probs[indices] = run([texts[i] for i in indices])  # (run, num_labels)
    return probs


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(batch, num_labels)`` logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (batch, num_labels)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
