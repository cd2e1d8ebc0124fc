"""The in-memory tiny tokenizer and tiny modules."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from fanbu.models import tiny_tokenizer
from fanbu.models.tiny import bag_of_tokens


def test_tokenizer_has_the_special_tokens() -> None:
    tok = tiny_tokenizer()
    for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
        assert getattr(tok, f"{name}_token_id") is not None, name
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.model_input_names == ["input_ids", "attention_mask"]


def test_tokenizer_splits_words_and_characters() -> None:
    tok = tiny_tokenizer()
    ids = tok("The patients, testing 42!")["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "the", "patients", ",", "test", "##ing", "4", "##2", "!", "[SEP]"]
    assert tok.decode(ids, skip_special_tokens=True) == "the patients, testing 42!"
    assert tok.convert_ids_to_tokens(tok("中")["input_ids"])[1] == "[UNK]"


def test_tokenizer_saves_and_loads(tmp_path: Path) -> None:
    tok = tiny_tokenizer(model_max_length=32)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ["hello world", "computer prices"]
    assert loaded(text, padding=True)["input_ids"] == tok(text, padding=True)["input_ids"]
    assert loaded.model_max_length == 32
    assert loaded.pad_token == "[PAD]" and loaded.eos_token == "[SEP]"


def test_tiny_factories_leave_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    a = bag_of_tokens(vocab_size=10, seed=1)
    after = torch.rand(1)
    assert torch.equal(expected, after)
    b = bag_of_tokens(vocab_size=10, seed=1)
    assert torch.equal(a.embedding.weight, b.embedding.weight)
