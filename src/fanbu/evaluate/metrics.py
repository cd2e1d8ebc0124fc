"""Quality metrics: classification scores and causal-LM perplexity.

Everything here is generic: predictions and labels are integer sequences, and perplexity takes any
causal LM that maps ``input_ids`` (and optionally ``attention_mask``) to logits, with any tokenizer
that is callable like a Hugging Face one. Nothing depends on fanbu's model handles.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from fanbu.errors import FanbuError

IntSequence = Sequence[int] | np.ndarray


class EvaluationError(FanbuError, ValueError):
    """Evaluation inputs are empty, mismatched or out of range (also a ``ValueError``)."""


def _as_pair(predictions: IntSequence, labels: IntSequence) -> tuple[np.ndarray, np.ndarray]:
    """Check that predictions and labels are non-empty 1-D sequences of the same length."""
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if pred.ndim != 1 or gold.ndim != 1:
        raise EvaluationError(
            f"predictions and labels must be 1-D sequences of class ids, got shapes {pred.shape} and "
            f"{gold.shape} (take argmax over the logits first)"
        )
    if len(pred) != len(gold):
        raise EvaluationError(
            f"{len(pred)} predictions but {len(gold)} labels; score the same examples you predicted"
        )
    if len(pred) == 0:
        raise EvaluationError("no predictions to score; the evaluation split is empty")
    return pred, gold


def accuracy(predictions: IntSequence, labels: IntSequence) -> float:
    """Fraction of predictions equal to their label."""
    pred, gold = _as_pair(predictions, labels)
    return float(np.mean(pred == gold))


def macro_f1(predictions: IntSequence, labels: IntSequence, num_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 (classes absent from both sides score 0 when ``num_labels`` is set).

    Args:
        predictions: Predicted class ids.
        labels: Gold class ids.
        num_labels: Average over ``range(num_labels)``; by default over the classes that occur.
    """
    pred, gold = _as_pair(predictions, labels)
    classes: list[int] | None = None
    if num_labels is not None:
        if num_labels < 1:
            raise EvaluationError(f"num_labels must be >= 1, got {num_labels}")
        for name, values in (("prediction", pred), ("label", gold)):
            outside = values[(values < 0) | (values >= num_labels)]
            if outside.size:
                raise EvaluationError(
                    f"{name} {outside[0].item()!r} is outside range(num_labels={num_labels}); "
                    "pass the model's number of classes"
                )
        classes = list(range(num_labels))
    score = f1_score(gold, pred, average="macro", labels=classes, zero_division=0)
    return float(score)


def classification_metrics(
    predictions: IntSequence, labels: IntSequence, num_labels: int | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1 and the number of scored examples ``n``."""
    pred, gold = _as_pair(predictions, labels)
    return {
        "accuracy": accuracy(pred, gold),
        "macro_f1": macro_f1(pred, gold, num_labels),
        "n": len(pred),
    }


def _windows(ids: list[int], max_length: int, stride: int) -> list[tuple[list[int], int]]:
    """Cut one token sequence into windows; each comes with how many trailing tokens it scores.

    Overlapping windows (``stride < max_length``) score only the tokens the previous window did not,
    so every token is scored once, with up to ``max_length - stride`` tokens of extra context.
    """
    out: list[tuple[list[int], int]] = []
    begin, prev_end = 0, 0
    while True:
        end = min(begin + max_length, len(ids))
        out.append((ids[begin:end], end - prev_end))
        if end == len(ids):
            return out
        prev_end, begin = end, begin + stride


def _logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Call ``model`` HF-style and return its logits ``(batch, seq, vocab)``."""
    params = inspect.signature(model.forward).parameters
    takes_mask = "attention_mask" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    out: Any = model(input_ids, attention_mask=attention_mask) if takes_mask else model(input_ids)
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise EvaluationError(
            "perplexity needs a causal LM returning logits of shape (batch, seq, vocab); got "
            f"{type(out).__name__}; pass an AutoModelForCausalLM-style model"
        )
    return logits


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each non-empty text, with the tokenizer's special tokens, unpadded and uncut."""
    kept = [t for t in texts if t and t.strip()]
    if not kept:
        return []
    encoded = tokenizer(list(kept))
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    return [list(map(int, seq)) for seq in ids]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int = 256,
    stride: int | None = None,
) -> float:
    """Token-weighted perplexity ``exp(sum NLL / tokens)`` of a causal LM over ``texts``.

    Texts longer than ``max_length`` tokens are cut into windows ``stride`` tokens apart (default: no
    overlap). Windows are right-padded into batches; padding never enters the loss. The model's
    train/eval mode is restored afterwards.

    Args:
        model: Maps ``input_ids`` (and ``attention_mask`` if it takes one) to logits or an output
            with ``.logits``.
        tokenizer: Callable on a list of strings, returning ``{"input_ids": [[int, ...], ...]}``.
        texts: Texts to score; empty ones are skipped.
        batch_size: Windows per forward pass.
        max_length: Tokens per window (context length).
        stride: Tokens between window starts, ``1 <= stride <= max_length``.

    Raises:
        EvaluationError: bad sizes, or no token to score at all.
    """
    stride = max_length if stride is None else stride
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if max_length < 2:
        raise EvaluationError(f"max_length must be >= 2 to predict a next token, got {max_length}")
    if not 1 <= stride <= max_length:
        raise EvaluationError(f"stride must be in [1, max_length={max_length}], got {stride}")

    windows = [w for ids in _tokenize(tokenizer, texts) for w in _windows(ids, max_length, stride)]
    windows = [(ids, n) for ids, n in windows if min(n, len(ids) - 1) > 0]  # at least one target
    if not windows:
        raise EvaluationError(
            "no tokens to score: every text is empty or a single token; pass non-empty texts"
        )

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            seq = max(len(ids) for ids, _ in chunk)
            input_ids = torch.zeros(len(chunk), seq, dtype=torch.long)  # (batch, seq), right-padded
            attention_mask = torch.zeros(len(chunk), seq, dtype=torch.long)  # (batch, seq)
            targets = torch.full((len(chunk), seq), -100, dtype=torch.long)  # (batch, seq)
            for row, (ids, scored) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
                targets[row, len(ids) - scored : len(ids)] = torch.tensor(ids[len(ids) - scored :])
            logits = _logits(model, input_ids.to(device), attention_mask.to(device))  # (batch, seq, vocab)
            shift_logits = logits[:, :-1, :].float()  # (batch, seq-1, vocab): position t predicts t+1
            shift_targets = targets[:, 1:].to(device)  # (batch, seq-1)
            nll = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_targets.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total_nll += float(nll)
            total_tokens += int((shift_targets != -100).sum())
    finally:
        for module, training in modes:
            module.training = training
    return math.exp(total_nll / total_tokens)
