"""Integrated gradients on a classifier's word-embedding layer, aggregated into word scores.

:func:`layer_attributions` runs Captum's ``LayerIntegratedGradients`` on any model given as a function
of ``(input_ids, attention_mask)`` and its embedding layer; the baseline replaces every token but the
special ones by the pad token, so each token's attribution is what its word adds over an empty text.
:func:`word_scores` runs it on a handle's head over a set of texts, each text attributed towards the
class the model predicts, and sums the pieces of a word (offsets from the fast tokenizer) into one
occurrence: per class and word, the sum of attributions and the count, special tokens dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from captum.attr import LayerIntegratedGradients
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ModelError
from fanbu.models.encoder import EncoderHandle

PUNCTUATION = ".,;:!?\"'()[]{}<>"
ForwardIds = Callable[[Tensor, Tensor], Tensor]  # (input_ids, attention_mask) -> logits (batch, C)


class IGConfig(Strict):
    """How integrated gradients are computed and over how many texts."""

    steps: int = Field(
        16, ge=2, description="Points on the straight path from the baseline (Gauss-Legendre)."
    )
    batch_size: int = Field(8, ge=1, description="Texts per attribution call (each runs steps forwards).")
    max_texts: int | None = Field(
        200, ge=1, description="Attribute at most this many texts of a domain (the first ones); null: all."
    )


def pad_baseline(input_ids: Tensor, special_ids: Sequence[int], pad_id: int) -> Tensor:
    """``input_ids`` with every non-special token replaced by ``pad_id``: ``(batch, seq)``."""
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))
    return torch.where(special, input_ids, torch.full_like(input_ids, pad_id))


def layer_attributions(
    forward: ForwardIds,
    embedding: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    baseline_ids: Tensor,
    steps: int = 16,
) -> tuple[Tensor, Tensor]:
    """Integrated gradients of ``forward``'s ``target`` logit w.r.t. ``embedding``'s output.

    Returns per-token attributions ``(batch, seq)`` (summed over the embedding width) and Captum's
    convergence delta ``(batch,)`` (sum of attributions minus the logit difference to the baseline).
    """
    explainer = LayerIntegratedGradients(forward, embedding)
    attributions, delta = explainer.attribute(
        inputs=input_ids,
        baselines=baseline_ids,
        target=target,
        additional_forward_args=(attention_mask,),
        n_steps=steps,
        return_convergence_delta=True,
    )  # (batch, seq, width), (batch,)
    return attributions.sum(dim=-1).detach(), delta.detach()


@dataclass
class WordScores:
    """One model's attributions on one head over a set of texts.

    Attributes:
        labels: The head's class names.
        sums: ``(class index, word) -> sum of attributions`` towards that class, over the texts the
            model assigns to it.
        counts: ``(class index, word) -> occurrences``.
        scale: Mean absolute attribution of a word occurrence (the unit scores are compared in).
        delta: Mean absolute convergence delta of integrated gradients (how far the path sum is off).
    """

    labels: list[str]
    sums: dict[tuple[int, str], float] = field(default_factory=dict)
    counts: dict[tuple[int, str], int] = field(default_factory=dict)
    scale: float = 0.0
    delta: float = 0.0

    def score(self, label: int, word: str) -> float:
        """Mean attribution of ``word`` towards class ``label`` in units of :attr:`scale` (0 if unseen)."""
        count = self.counts.get((label, word), 0)
        if count == 0 or self.scale <= 0:
            return 0.0
        return self.sums[(label, word)] / count / self.scale


def text_words(
    text: str, offsets: Sequence[tuple[int, int]], special: Sequence[bool]
) -> list[tuple[int, str]]:
    """Per token: where its word starts and the word (lower-cased, between spaces, outer punctuation
    stripped); ``(-1, "")`` for special and padding tokens."""
    words: list[tuple[int, str]] = []
    for (start, end), is_special in zip(offsets, special, strict=True):
        if is_special or end <= start:
            words.append((-1, ""))
            continue
        left, right = start, end
        while left > 0 and not text[left - 1].isspace():
            left -= 1
        while right < len(text) and not text[right].isspace():
            right += 1
        words.append((left, text[left:right].lower().strip(PUNCTUATION)))
    return words


def occurrences(words: Sequence[tuple[int, str]], attributions: Sequence[float]) -> list[tuple[str, float]]:
    """Sum the attributions of the tokens of each word occurrence: ``[(word, attribution)]`` in order."""
    found: list[tuple[str, float]] = []
    previous = -1
    for (left, word), value in zip(words, attributions, strict=True):
        if left < 0:
            previous = -1
            continue
        if left == previous and found:
            found[-1] = (found[-1][0], found[-1][1] + value)
        else:
            found.append((word, value))
        previous = left
    return [(w, v) for w, v in found if w]


def word_scores(handle: EncoderHandle, head: str, texts: Sequence[str], config: IGConfig) -> WordScores:
    """Attribute ``texts`` through ``handle``'s ``head`` towards each text's predicted class, by word."""
    if head not in handle.labels:
        raise ModelError(f"attribution: the model has no head {head!r} (heads: {sorted(handle.labels)})")
    tokenizer = handle.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("attribution needs a fast tokenizer (offsets map tokens to words)")
    chosen = list(texts)[: config.max_texts]
    model = handle.model
    was_training = model.training
    model.eval()
    embedding = model.encoder.get_input_embeddings()
    special_ids = sorted(set(tokenizer.all_special_ids))
    result = WordScores(list(handle.labels[head]))
    total_abs, seen, deltas = 0.0, 0, []

    def forward(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, head=head)  # (batch, C)

    try:
        for start in range(0, len(chosen), config.batch_size):
            batch = chosen[start : start + config.batch_size]
            enc = tokenizer(
                batch,
                truncation=True,
                max_length=handle.max_length,
                padding=True,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
                return_tensors="pt",
            )
            ids, mask = enc["input_ids"], enc["attention_mask"]  # (batch, seq)
            with torch.no_grad():
                target = forward(ids, mask).argmax(dim=-1)  # (batch,)
            baseline = pad_baseline(ids, special_ids, int(tokenizer.pad_token_id))
            attr, delta = layer_attributions(forward, embedding, ids, mask, target, baseline, config.steps)
            deltas += delta.abs().tolist()
            for row, text in enumerate(batch):
                special = (enc["special_tokens_mask"][row].bool() | (mask[row] == 0)).tolist()
                words = text_words(text, [tuple(o) for o in enc["offset_mapping"][row].tolist()], special)
                label = int(target[row])
                for word, value in occurrences(words, attr[row].tolist()):
                    key = (label, word)
                    result.sums[key] = result.sums.get(key, 0.0) + value
                    result.counts[key] = result.counts.get(key, 0) + 1
                    total_abs, seen = total_abs + abs(value), seen + 1
    finally:
        model.train(was_training)
    result.scale = total_abs / max(1, seen)
    result.delta = sum(deltas) / max(1, len(deltas))
    return result
