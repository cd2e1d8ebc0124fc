"""Vocabulary trimming: a real WordPiece tokenizer over the kept tokens, embedding rows carried over."""

from __future__ import annotations

import string

import pytest
import torch
from prune_helpers import TEXTS
from transformers import AutoTokenizer

from fanbu.derive.prune import PruneConfig, PruneError, prune_encoder, select_vocab, trim_tokenizer
from fanbu.derive.prune.vocab import required_ids


def test_required_tokens_are_specials_and_single_characters(encoder) -> None:
    tokenizer = encoder.tokenizer
    required = set(tokenizer.convert_ids_to_tokens(required_ids(tokenizer)))
    chars = string.ascii_lowercase + string.digits + string.punctuation
    expected = set(tokenizer.all_special_tokens) | set(chars) | {f"##{c}" for c in chars}
    assert required == expected


def test_trimmed_tokenizer_keeps_specials_chars_and_frequent_words(encoder, calibration, tmp_path) -> None:
    pruned = prune_encoder(encoder, PruneConfig(vocab=200), calibration)
    tokenizer = pruned.tokenizer
    assert len(tokenizer) == 200 == pruned.model.encoder.config.vocab_size
    vocab = tokenizer.get_vocab()
    assert set(encoder.tokenizer.all_special_tokens) <= set(vocab)
    assert all(c in vocab and f"##{c}" in vocab for c in string.ascii_lowercase + string.digits)
    assert {"the", "patients", "treatment", "hardware"} <= set(vocab)  # frequent in the calibration texts
    assert "church" not in vocab  # in the original vocabulary, never seen in calibration
    assert pruned.model.encoder.config.pad_token_id == tokenizer.pad_token_id

    ids = tokenizer("zebra church 42!")["input_ids"]
    assert tokenizer.unk_token_id not in ids  # unseen words fall back to characters
    assert tokenizer.decode(ids, skip_special_tokens=True) == "zebra church 42!"
    assert tokenizer.unk_token_id in tokenizer("日本")["input_ids"]  # unknown characters only

    tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in [*TEXTS, "zebra church 42!"]:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(reloaded) == 200


def test_kept_token_rows_equal_the_original_embedding_rows(encoder, calibration) -> None:
    pruned = prune_encoder(encoder, PruneConfig(vocab=200), calibration)
    old = encoder.model.encoder.embeddings.word_embeddings.weight
    new = pruned.model.encoder.embeddings.word_embeddings.weight
    old_ids = encoder.tokenizer.get_vocab()
    for token, new_id in pruned.tokenizer.get_vocab().items():
        assert torch.equal(new[new_id], old[old_ids[token]]), token


def test_selection_prefers_frequent_tokens(encoder) -> None:
    tokenizer = encoder.tokenizer
    base = len(required_ids(tokenizer))
    keep = select_vocab(tokenizer, ["politics politics politics market"], base + 2)
    tokens = set(tokenizer.convert_ids_to_tokens(keep.tolist()))
    assert {"politics", "market"} <= tokens
    assert keep.tolist() == sorted(keep.tolist())
    trimmed = trim_tokenizer(tokenizer, keep)
    assert trimmed.convert_ids_to_tokens(trimmed("politics")["input_ids"]) == ["[CLS]", "politics", "[SEP]"]


def test_vocab_bounds_are_explained(encoder, calibration) -> None:
    minimum = len(required_ids(encoder.tokenizer))
    with pytest.raises(PruneError, match=rf"below the {minimum} tokens always kept.*set vocab >= {minimum}"):
        prune_encoder(encoder, PruneConfig(vocab=50), calibration)
    with pytest.raises(PruneError, match="exceeds the tokenizer's 592 tokens; set vocab <= 592"):
        prune_encoder(encoder, PruneConfig(vocab=600), calibration)
    with pytest.raises(PruneError, match="vocab trimming .* needs calibration data"):
        prune_encoder(encoder, PruneConfig(vocab=300))
