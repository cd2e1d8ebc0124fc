"""Read (text, label) records from JSONL, CSV, Parquet and Hugging Face ``datasets`` sources.

Each record remembers where it came from (``data/med.jsonl line 17``) so that every later error can
point at the exact line. pandas, pyarrow and datasets are imported only when a file needs them.
:class:`Record`, :class:`Table` and :func:`extract` are in :mod:`fanbu.data.table` (shared with
:mod:`fanbu.data.hf`, which only this module imports).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fanbu.data.table import Record, Table, extract
from fanbu.errors import DomainError

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "Record",
    "Table",
    "extract",
    "read_records",
    "read_table",
    "resolve_format",
]

FORMATS = ("auto", "jsonl", "csv", "parquet", "hf_disk", "hf_hub")
EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED = (
    ".jsonl or .json (JSON lines), .csv, .parquet, or a directory written by datasets' save_to_disk; "
    "set format to one of jsonl, csv, parquet, hf_disk, hf_hub"
)


def resolve_format(path: str | Path, fmt: str) -> str:
    """The concrete format of ``path``: ``fmt`` itself unless it is ``auto``."""
    if fmt not in FORMATS:
        raise DomainError(f"{path}: unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    if fmt != "auto":
        return fmt
    location = Path(path)
    if location.is_dir():
        return "hf_disk"
    found = EXTENSIONS.get(location.suffix.lower())
    if found is None:
        shown = location.suffix or "(none)"
        raise DomainError(
            f"{path}: cannot tell the format from the extension {shown} (supported: {SUPPORTED})"
        )
    return found


def read_records(
    path: str | Path, *, fmt: str = "auto", text_field: str = "text", label_field: str | None = "label"
) -> list[tuple[str, object]]:
    """Read ``(text, raw label)`` pairs from a file; the label is ``None`` when ``label_field`` is ``None``.

    For a ``save_to_disk`` directory holding a DatasetDict, the ``train`` split is read (or the only
    split). For ``hf_hub``, ``path`` is a hub dataset name and its ``train`` split is read.
    """
    table = read_table(path, fmt=fmt, text_field=text_field, label_field=label_field)
    return [(record.text, record.label) for record in table.records]


def read_table(
    path: str | Path,
    *,
    fmt: str = "auto",
    text_field: str = "text",
    label_field: str | None = "label",
    split: str = "train",
    missing_hint: str = "check the path",
) -> Table:
    """Read one source into a :class:`Table`; ``split`` picks the key of a DatasetDict."""
    concrete = resolve_format(path, fmt)
    if concrete == "hf_hub":
        from fanbu.data.hf import load_hub, table_from_hf

        return table_from_hf(load_hub(str(path), None), str(path), split, text_field, label_field)
    location = Path(path)
    if not location.exists():
        raise DomainError(f"{path}: file not found ({missing_hint})")
    if concrete == "hf_disk":
        from fanbu.data.hf import load_disk, table_from_hf

        return table_from_hf(load_disk(location), str(path), split, text_field, label_field)
    if location.is_dir():
        raise DomainError(
            f"{path}: is a directory, not a {concrete} file (point at the file, or use format hf_disk)"
        )
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
    rows = readers[concrete](location, text_field)
    return Table([extract(row, where, text_field, label_field) for row, where in rows])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DomainError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from None


def _jsonl_rows(path: Path, text_field: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    """JSON lines (blank lines skipped, physical line numbers); a ``.json`` file may also be one array."""
    content = _read_text(path)
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        yield from _json_array_rows(path, content)
        return
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DomainError(
                f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must hold one JSON object"
            ) from None
        if not isinstance(row, dict):
            raise DomainError(
                f"{path} line {number}: expected a JSON object like "
                f'{{"{text_field}": "...", "label": "..."}}, got a {type(row).__name__}'
            )
        yield row, f"{path} line {number}"


def _json_array_rows(path: Path, content: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    try:
        rows = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DomainError(
            f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DomainError(f"{path} record {number}: expected a JSON object, got a {type(row).__name__}")
        yield row, f"{path} record {number}"


def _csv_rows(path: Path, text_field: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype={text_field: str})
    except pd.errors.EmptyDataError:
        return
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DomainError(f"{path}: not valid CSV with a header row ({exc})") from None
    for index, row in enumerate(frame.to_dict("records")):
        yield row, f"{path} data line {index + 1}"


def _parquet_rows(path: Path, text_field: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DomainError(f"{path}: not a readable Parquet file ({exc})") from None
    for index, row in enumerate(rows):
        yield row, f"{path} row {index}"
