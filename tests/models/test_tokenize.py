"""The fast tokenization path gives the ids Hugging Face's truncation gives, faster, and head+tail on request."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fanbu.errors import ModelError
from fanbu.models.encoder import EncoderHandle
from fanbu.models.tiny import tiny_tokenizer
from fanbu.models.tokenize import CHARS_PER_TOKEN, encode_texts

WORDS = ["the", "state", "government", "a", "!!", "1234567", "zzzzqqq", "x-ray", "\n", "  ", "church", "ok."]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 900))) for _ in range(n)]
    texts.append("y" * 5000)  # one huge "word": the cut finds no whitespace
    texts.append(("ab " * 40) + "q" * 3000 + (" cd" * 40))  # pieces around the cut are short on tokens
    return texts


@pytest.mark.parametrize("max_length", [8, 32, 64])
def test_head_matches_hugging_face_truncation(max_length: int) -> None:
    tokenizer = tiny_tokenizer(model_max_length=max_length)
    texts = _texts(40)
    ids, mask = encode_texts(tokenizer, texts, max_length)
    ref = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])


def test_long_texts_are_cut_before_tokenizing_yet_match() -> None:
    tokenizer = tiny_tokenizer(model_max_length=16)
    text = " ".join(["government"] * 10_000)
    assert len(text) > 16 * CHARS_PER_TOKEN * 10
    ids, _ = encode_texts(tokenizer, [text], 16)
    ref = tokenizer([text], truncation=True, max_length=16, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(ids, ref)


def test_head_tail_keeps_both_ends() -> None:
    tokenizer = tiny_tokenizer(model_max_length=32)
    texts = _texts(30, seed=1)
    ids, mask = encode_texts(tokenizer, texts, 32, "head_tail")
    budget = 30
    head, tail = budget - budget // 2, budget // 2
    for row, (text, m) in enumerate(zip(texts, mask, strict=True)):
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        kept = full if len(full) <= budget else full[:head] + full[-tail:]
        expected = [tokenizer.cls_token_id, *kept, tokenizer.sep_token_id]
        assert ids[row][m == 1].tolist() == expected


def test_left_padding_follows_the_tokenizer() -> None:
    tokenizer = tiny_tokenizer(model_max_length=16)
    tokenizer.padding_side = "left"
    ids, mask = encode_texts(tokenizer, ["the state", "the state of the world is good"], 16)
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and ids[0, -1] == tokenizer.sep_token_id


def test_bad_inputs_are_refused() -> None:
    tokenizer = tiny_tokenizer(model_max_length=16)
    with pytest.raises(ModelError, match="list of texts"):
        encode_texts(tokenizer, "a string", 16)
    with pytest.raises(ModelError, match="no texts"):
        encode_texts(tokenizer, [], 16)
    with pytest.raises(ModelError, match="not a str"):
        encode_texts(tokenizer, ["ok", 3], 16)  # type: ignore[list-item]
    with pytest.raises(ModelError, match="truncation"):
        encode_texts(tokenizer, ["ok"], 16, "tail")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="no room"):
        encode_texts(tokenizer, ["ok"], 3)


def test_predict_is_independent_of_input_order(tmp_path) -> None:
    handle = EncoderHandle.tiny(max_length=32)
    handle.add_head("t", ["a", "b", "c"])
    texts = _texts(12, seed=2)
    probs = handle.predict_proba(texts, "t", batch_size=4)
    reversed_probs = handle.predict_proba(texts[::-1], "t", batch_size=4)
    np.testing.assert_allclose(probs, reversed_probs[::-1], atol=1e-5)
    one_by_one = np.concatenate([handle.predict_proba([t], "t") for t in texts])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)


def test_truncation_is_saved_with_the_handle(tmp_path) -> None:
    from fanbu.models.artefact import Provenance

    handle = EncoderHandle.tiny(max_length=32)
    handle.truncation = "head_tail"
    handle.save(tmp_path / "m", Provenance())
    assert EncoderHandle.load(tmp_path / "m").truncation == "head_tail"
    with pytest.raises(ModelError, match="truncation"):
        EncoderHandle(handle.model, handle.tokenizer, handle.labels, 32, truncation="middle")  # type: ignore[arg-type]


