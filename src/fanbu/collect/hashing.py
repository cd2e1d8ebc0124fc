"""What the logging store keeps of a text: the text, only its hash, or the text with identifiers masked.

Masking replaces e-mail addresses, phone numbers and long digit runs (account, card or ID numbers).
It errs on the side of masking: a date written ``2024-01-15`` looks like a phone number and is masked.
"""

from __future__ import annotations

import re
from typing import Literal

from fanbu.io import sha256_bytes

PrivacyMode = Literal["text", "hash", "mask"]
PRIVACY_MODES: tuple[str, ...] = ("text", "hash", "mask")

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# +1 (555) 123-4567, 555.123.4567, 020 7946 0958, +44 20 7946 0958: groups of digits joined by separators.
PHONE = re.compile(
    r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?"  # optional country code
    r"(?:\(\d{1,4}\)[\s.-]?\d{2,4}(?:[\s.-]\d{2,4})+"  # (area) then one or more groups
    r"|\d{2,4}(?:[\s.-]\d{2,4}){2,})(?!\w)"  # or three or more groups
)
DIGITS = re.compile(r"\d{6,}")  # long digit runs: account, card and ID numbers

MASKS = ((EMAIL, "[EMAIL]"), (PHONE, "[PHONE]"), (DIGITS, "[NUMBER]"))


def mask_text(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers and runs of 6+ digits replaced by placeholders."""
    for pattern, placeholder in MASKS:
        text = pattern.sub(placeholder, text)
    return text


def text_hash(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return sha256_bytes(text.encode("utf-8"))


def stored_form(text: str, mode: PrivacyMode) -> tuple[str | None, str]:
    """``(text to store or None, its hash)`` under ``mode``.

    The hash is of what is stored (the masked text under ``mask``), or of the raw text under ``hash``,
    where nothing else is kept; it identifies repeats of a text without keeping it.
    """
    if mode == "text":
        return text, text_hash(text)
    if mode == "hash":
        return None, text_hash(text)
    if mode == "mask":
        masked = mask_text(text)
        return masked, text_hash(masked)
    raise ValueError(f"unknown privacy mode {mode!r}: use one of {', '.join(PRIVACY_MODES)}")
