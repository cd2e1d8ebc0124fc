"""Turn texts into padded token ids fast, keeping the head (or the head and the tail) of long texts.

Two things make this faster than calling the Hugging Face tokenizer with ``truncation=True``:

- A long text is cut to a character budget before tokenizing (a fast tokenizer otherwise tokenizes
  every character of a 20 Newsgroups post only to keep its first 128 tokens). The cut falls on
  whitespace and keeps a margin of tokens beyond those used, so the ids are the same as those of the
  whole text; when a piece yields too few tokens the whole text is tokenized instead.
- The Rust tokenizer is called directly (on a private copy without truncation or padding state), once
  per batch.

``head_tail`` keeps the first and the last halves of the token budget: the end of a post (its
conclusion, its signature) often says as much as its start (Sun et al., 2019, "How to Fine-Tune BERT
for Text Classification?").
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from tokenizers import Tokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import ModelError

Truncation = Literal["head", "head_tail"]
TRUNCATIONS: tuple[str, ...] = ("head", "head_tail")
CHARS_PER_TOKEN = 8  # character budget per kept token before a text is cut (generous: ~4 on English)
MARGIN = 8  # extra tokens a cut piece must yield, so that tokens near the cut are never kept



@dataclass(frozen=True)
class _Prepared:
    raw: Tokenizer | None  # a private copy of the Rust backend without truncation or padding; None if slow
    prefix: list[int]  # special tokens before the text ([CLS] for BERT)
    suffix: list[int]  # special tokens after it ([SEP] for BERT)


_PREPARED: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, _Prepared] = weakref.WeakKeyDictionary()


def _prepared(tokenizer: PreTrainedTokenizerBase) -> _Prepared:
    """The raw backend and the special tokens the tokenizer wraps a single text in (cached)."""
    if tokenizer not in _PREPARED:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        raw = None
        if backend is not None:
            raw = Tokenizer.from_str(backend.to_str())
            raw.no_truncation()
            raw.no_padding()
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        at = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
        if at is None:
            raise ModelError(f"{type(tokenizer).__name__}: cannot locate the text between its special tokens")
        _PREPARED[tokenizer] = _Prepared(raw, list(full[:at]), list(full[at + len(bare) :]))
    return _PREPARED[tokenizer]


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens."""
    raw = _prepared(tokenizer).raw
    if raw is not None:
        return [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _head_piece(text: str, chars: int) -> str | None:
    """The text up to the last whitespace before ``chars`` (None: no cut needed or possible)."""
    if len(text) <= chars:
        return None
    cut = max(text.rfind(" ", 0, chars), text.rfind("\n", 0, chars))
    return text[:cut] if cut > 0 else None


def _tail_piece(text: str, chars: int) -> str | None:
    """The text from the first whitespace after ``len - chars``, whitespace included."""
    if len(text) <= chars:
        return None
    start = len(text) - chars
    cut = min((i for i in (text.find(" ", start), text.find("\n", start)) if i >= 0), default=-1)
    return text[cut:] if cut > 0 else None


def _content_ids(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], budget: int, truncation: Truncation
) -> list[list[int]]:
    """The kept content ids of each text (at most ``budget``)."""
    head = budget if truncation == "head" else budget - budget // 2
    tail = budget - head
    pieces: list[str] = []
    plan: list[tuple[int, int] | None] = []  # per text: (head piece index, tail piece index or -1), None = whole
    for text in texts:
        first = _head_piece(text, (head + MARGIN) * CHARS_PER_TOKEN)
        last = _tail_piece(text, (tail + MARGIN) * CHARS_PER_TOKEN) if tail else None
        if first is None or (tail and (last is None or len(first) + len(last) >= len(text))):
            plan.append(None)
            pieces.append(text)
            continue
        plan.append((len(pieces), len(pieces) + 1 if tail else -1))
        pieces.extend([first, last] if tail else [first])
    encoded = _ids(tokenizer, pieces)
    out: list[list[int]] = []
    cursor = 0
    for text, entry in zip(texts, plan, strict=True):
        if entry is None:
            ids = encoded[cursor]
            cursor += 1
            out.append(ids if len(ids) <= budget else ids[:head] + (ids[len(ids) - tail :] if tail else []))
            continue
        first_ids = encoded[entry[0]]
        last_ids = encoded[entry[1]] if tail else []
        cursor += 2 if tail else 1
        if len(first_ids) < head + MARGIN or (tail and len(last_ids) < tail + MARGIN):
            ids = _ids(tokenizer, [text])[0]  # a piece was short on tokens: tokenize the whole text
            out.append(ids if len(ids) <= budget else ids[:head] + (ids[len(ids) - tail :] if tail else []))
            continue
        out.append(first_ids[:head] + (last_ids[len(last_ids) - tail :] if tail else []))
    return out


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, truncation: Truncation = "head"
) -> tuple[np.ndarray, np.ndarray]:
    """Padded ``input_ids`` and ``attention_mask`` (int64, each ``(batch, seq)``) with special tokens.

    The sequence length is that of the longest text in the batch (at most ``max_length``).
    """
    if isinstance(texts, str):
        raise ModelError("pass a list of texts, not a single string (wrap it: [text])")
    if len(texts) == 0:
        raise ModelError("no texts to tokenize; pass at least one")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ModelError(f"text {index} is a {type(text).__name__}, not a str; convert it first")
    if truncation not in TRUNCATIONS:
        raise ModelError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    prepared = _prepared(tokenizer)
    budget = max_length - len(prepared.prefix) - len(prepared.suffix)
    if budget < 2:
        raise ModelError(f"max_length {max_length} leaves no room for text after the special tokens; raise it")
    rows = [prepared.prefix + ids + prepared.suffix for ids in _content_ids(tokenizer, texts, budget, truncation)]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(rows), width), pad, dtype=np.int64)  # (batch, seq)
    mask = np.zeros((len(rows), width), dtype=np.int64)  # (batch, seq)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return ids, mask

