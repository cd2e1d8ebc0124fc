"""Masking for masked-language-model continued pretraining (BERT's recipe, https://arxiv.org/abs/1810.04805).

Of the real tokens (attention mask 1, not a special token), each is chosen with probability ``rate``;
a chosen token becomes ``[MASK]`` 80% of the time, a random token 10% and stays itself 10%. The labels
hold the original id at chosen positions and -100 (ignored by cross-entropy) everywhere else.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor

IGNORE = -100


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Collection[int],
    rate: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked ``input_ids`` and MLM ``labels``, both ``(batch, seq)``; special tokens and padding stay as
    they are and are never predicted.

    Args:
        input_ids: Token ids ``(batch, seq)``.
        attention_mask: 1 for real tokens, 0 for padding ``(batch, seq)``.
        mask_token_id: The tokenizer's ``[MASK]`` id.
        vocab_size: Random replacements are drawn from ``range(vocab_size)`` minus the special ids.
        special_ids: Ids never masked (``tokenizer.all_special_ids``: CLS, SEP, PAD, ...).
        rate: Probability that a real token is chosen.
        generator: Seeds the draws.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the masking rate must lie strictly between 0 and 1, got {rate}")
    special = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)  # (batch, seq)
    draw = torch.rand(input_ids.shape, generator=generator)  # (batch, seq)
    chosen = eligible & (draw < rate)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    action = torch.rand(input_ids.shape, generator=generator)  # (batch, seq): which of 80/10/10
    masked = input_ids.clone()
    masked[chosen & (action < 0.8)] = mask_token_id
    ordinary = torch.tensor(
        [i for i in range(vocab_size) if i not in set(special_ids)], dtype=input_ids.dtype
    )
    if len(ordinary) == 0:
        raise ValueError("every id of the vocabulary is special; nothing to draw random replacements from")
    swap = chosen & (action >= 0.8) & (action < 0.9)
    picks = torch.randint(len(ordinary), input_ids.shape, generator=generator)  # (batch, seq)
    masked[swap] = ordinary[picks[swap]]
    return masked, labels
