"""Prompt/completion pairs as token ids: the chat template when the tokenizer has one, labels on the
completion only. Training on corrections and the gate's instruction prompts both read them this way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fanbu.errors import DomainError

IGNORE = -100  # label of a token the loss skips (prompt and padding)


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """The prompt as the model expects it: one user turn of its chat template, or ``prompt + newline``."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return f"{prompt}\n"


def pair_ids(tokenizer: Any, prompt: str, completion: str, max_length: int) -> tuple[list[int], list[int]]:
    """``(input ids, labels)`` of prompt + completion + eos; labels are ``IGNORE`` on the prompt.

    A pair longer than ``max_length`` loses the start of its prompt; a completion that alone is longer
    is cut at its end.
    """
    if not completion.strip():
        raise DomainError(f"correction for prompt {prompt[:40]!r}: the completion is empty; drop the row")
    head = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    tail = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        tail = [*tail, tokenizer.eos_token_id]
    tail = tail[: max_length - 1]
    head = head[-(max_length - len(tail)) :] if len(head) + len(tail) > max_length else head
    return [*head, *tail], [IGNORE] * len(head) + list(tail)


def pair_batch(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` and ``labels``, each ``(batch, seq)``."""
    rows = [pair_ids(tokenizer, p, c, max_length) for p, c in pairs]
    seq = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), seq), int(tokenizer.pad_token_id), dtype=torch.long)  # (batch, seq)
    mask = torch.zeros(len(rows), seq, dtype=torch.long)  # (batch, seq)
    labels = torch.full((len(rows), seq), IGNORE, dtype=torch.long)  # (batch, seq)
    for row, (ids, target) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(target)
    return {"input_ids": input_ids, "attention_mask": mask}, labels


def completion_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row summed NLL of the labelled tokens and their count, each ``(batch,)``.

    Args:
        logits: ``(batch, seq, vocab)``; position ``t`` predicts token ``t + 1``.
        labels: ``(batch, seq)``, ``IGNORE`` where no loss is taken.
    """
    shifted = logits[:, :-1].float()  # (batch, seq-1, vocab)
    targets = labels[:, 1:]  # (batch, seq-1)
    nll = torch.nn.functional.cross_entropy(
        shifted.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
    )  # (batch, seq-1)
    counted = (targets != IGNORE).sum(dim=1)  # (batch,)
    return nll.sum(dim=1), counted
