"""MLM masking: the rate, and special tokens and padding untouched."""

from __future__ import annotations

import pytest
import torch

from fanbu.models.tiny import tiny_tokenizer
from fanbu.train.selfsup.masking import IGNORE, mask_tokens


def batch(rows: int = 64, length: int = 40):
    tokenizer = tiny_tokenizer(model_max_length=length)
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha())[:50]  # in the vocabulary: no [UNK]
    texts = [" ".join(words[(r * 7 + i) % len(words)] for i in range(5 + r % 30)) for r in range(rows)]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    return tokenizer, encoded["input_ids"], encoded["attention_mask"]


def test_the_rate_and_the_80_10_10_split():
    tokenizer, ids, mask = batch()
    special = tokenizer.all_special_ids
    masked, labels = mask_tokens(ids, mask, tokenizer.mask_token_id, len(tokenizer), special, rate=0.15,
                                 generator=torch.Generator().manual_seed(0))
    eligible = mask.bool() & ~torch.isin(ids, torch.tensor(special))
    chosen = labels != IGNORE
    assert float(chosen.sum() / eligible.sum()) == pytest.approx(0.15, abs=0.03)
    assert torch.equal(labels[chosen], ids[chosen])  # the labels are the original ids
    as_mask = float((masked[chosen] == tokenizer.mask_token_id).float().mean())
    assert as_mask == pytest.approx(0.8, abs=0.08)
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes


def test_special_tokens_and_padding_are_never_masked_or_predicted():
    tokenizer, ids, mask = batch()
    special = tokenizer.all_special_ids
    masked, labels = mask_tokens(ids, mask, tokenizer.mask_token_id, len(tokenizer), special, rate=0.9,
                                 generator=torch.Generator().manual_seed(1))
    protected = ~mask.bool() | torch.isin(ids, torch.tensor(special))
    assert protected.any()
    assert torch.equal(masked[protected], ids[protected])
    assert bool((labels[protected] == IGNORE).all())
    swapped = (labels != IGNORE) & (masked != ids) & (masked != tokenizer.mask_token_id)
    assert not torch.isin(masked[swapped], torch.tensor(special)).any()  # random replacements are ordinary


def test_a_rate_outside_zero_to_one_is_refused():
    tokenizer, ids, mask = batch(2, 8)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        mask_tokens(ids, mask, tokenizer.mask_token_id, len(tokenizer), tokenizer.all_special_ids, rate=1.0)
