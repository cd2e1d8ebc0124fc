"""Privacy modes: what the store keeps of a text."""

from __future__ import annotations

import pytest

from fanbu.collect.hashing import mask_text, stored_form, text_hash


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to jane.doe+news@mail.example.co.uk today", "write to [EMAIL] today"),
        ("call +1 (555) 123-4567 or 555.123.4567", "call [PHONE] or [PHONE]"),
        ("London: +44 20 7946 0958", "London: [PHONE]"),
        ("card 4111111111111111, order 123456", "card [NUMBER], order [NUMBER]"),
        ("room 101 on floor 12345", "room 101 on floor 12345"),  # short numbers stay
        ("nothing personal here", "nothing personal here"),
    ],
)
def test_mask(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_stored_forms() -> None:
    text = "mail a@b.org"
    assert stored_form(text, "text") == (text, text_hash(text))
    assert stored_form(text, "hash") == (None, text_hash(text))
    assert stored_form(text, "mask") == ("mail [EMAIL]", text_hash("mail [EMAIL]"))
    with pytest.raises(ValueError, match="unknown privacy mode"):
        stored_form(text, "plain")  # type: ignore[arg-type]
