"""One source's records: :class:`Record`, :class:`Table`, and :func:`extract`, which makes a record of a row.

Both the file readers (:mod:`fanbu.data.readers`) and the Hugging Face sources (:mod:`fanbu.data.hf`)
build tables with these, so neither has to import the other for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from fanbu.errors import DomainError


class Record(NamedTuple):
    """One example: its text, its raw label (``None`` when labels are not read) and its location."""

    text: str
    label: object
    where: str


@dataclass(frozen=True)
class Table:
    """Records read from one source, plus label names when the source declares them (ClassLabel)."""

    records: list[Record]
    label_names: tuple[str, ...] | None = None


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def extract(row: Mapping[str, Any], where: str, text_field: str, label_field: str | None) -> Record:
    """Pull the text and label out of one row, with errors that name the line and the fields present."""
    for name in (text_field, label_field):
        if name is None:
            continue
        if name not in row or _missing(row[name]):
            present = ", ".join(repr(k) for k, v in row.items() if not _missing(v)) or "none"
            problem = f"no {name!r} field" if name not in row else f"the {name!r} field is empty"
            raise DomainError(
                f"{where}: {problem} (fields present: {present}; "
                "set text_field/label_field of the domain to the right names)"
            )
    text = row[text_field]
    if not isinstance(text, str):
        raise DomainError(
            f"{where}: the {text_field!r} field is a {type(text).__name__}, not text "
            "(set text_field of the domain to the text column)"
        )
    label = None if label_field is None else row[label_field]
    for name, value in ((text_field, text), (label_field, label)):
        if isinstance(value, str):
            _check_unicode(value, where, name)
    return Record(text, label, where)


def _check_unicode(value: str, where: str, name: str | None) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate from a JSON ``\\ud800`` escape): it
    could not be hashed, tokenized or written out later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DomainError(
            f"{where}: the {name!r} field holds an unpaired surrogate {value[exc.start]!r} at character "
            f"{exc.start}, which is not valid Unicode; fix the \\u escape (write the character itself, or "
            "both halves of a surrogate pair)"
        ) from None
