"""Failures in words for the fuzzers' reports: short reprs, clipped messages, the innermost frames."""

from __future__ import annotations

import re
import traceback
from typing import Any


def shown(value: Any, limit: int = 1_500) -> str:
    """A repr short enough to read (a huge value shown by its length)."""
    return clip(re.sub(r"(.)\1{200,}", lambda m: f"{m.group(1)}*{len(m.group(0))}", repr(value)), limit)


def clip(text: str, limit: int = 500) -> str:
    """``text``, cut at ``limit`` characters with its length said."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def innermost(exc: BaseException) -> str:
    """The exception and the innermost frames it came from."""
    return "".join(traceback.format_exception(exc, limit=-4))
