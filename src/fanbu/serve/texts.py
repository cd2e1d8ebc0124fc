"""What the server accepts as a text: checked at the edge, before a text can join a micro-batch.

Every route (a model or a cascade, ONNX or PyTorch) reads its texts through :func:`check_texts`, so
a text that no tokenizer or store can take is refused with a 422 naming its index, and never reaches
the batch it would have failed for everyone in it. What is refused:

* a lone surrogate (U+D800..U+DFFF): valid in JSON's ``\\ud800`` escape, but not Unicode text, so
  it can be neither tokenized nor stored as UTF-8;
* NUL (U+0000): no SQL store keeps it in a text column;
* more than ``limits.max_text_chars`` characters.

Nothing is silently rewritten: other control characters and any Unicode are passed to the model's
own tokenizer, which normalises them as it did in training; texts longer than the model's
``max_length`` tokens are truncated there, as in training and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

from fanbu.serve.config import Limits
from fanbu.serve.errors import ApiError


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be served (``None`` if it can), naming the first bad position."""
    for position, char in enumerate(text):
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return f"not valid Unicode (lone surrogate U+{code:04X} at {position}); send UTF-8 text"
        if code == 0:
            return f"contains NUL (U+0000) at {position}; remove it"
    return None


def check_texts(texts: Sequence[str], limits: Limits) -> None:
    """Raise a 422 :class:`ApiError` naming the first text the server cannot take, and why."""
    if len(texts) > limits.max_batch_texts:
        raise ApiError(
            422,
            "too_many_texts",
            f"{len(texts)} texts in one request; the limit is "
            f"{limits.max_batch_texts} (limits.max_batch_texts): split the batch",
            "max_batch_texts",
        )
    for index, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise ApiError(
                422,
                "text_too_long",
                f"texts.{index} has {len(text)} characters; the limit is "
                f"{limits.max_text_chars} (limits.max_text_chars): shorten it",
                "max_text_chars",
            )
        problem = text_problem(text)
        if problem is not None:
            raise ApiError(422, "invalid_text", f"texts.{index}: {problem}")
