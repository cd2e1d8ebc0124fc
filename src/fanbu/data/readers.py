"""Read (text, label) records from JSONL, CSV, Parquet and Hugging Face ``datasets`` sources.

Each record remembers where it came from (``data/med.jsonl line 17``) so that every later error can
point at the exact line. pandas, pyarrow and datasets are imported only when a file needs them.
:class:`Record`, :class:`Table` and :func:`extract` are in :mod:`fanbu.data.table` (shared with
:mod:`fanbu.data.hf`, which only this module imports).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
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


# Byte-order marks and the codec that reads past them; UTF-32 first (its LE mark starts like UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_LINE_END = re.compile(r"\r\n|\r|\n")
_REMEDY_UTF8 = "re-save it as UTF-8 (a byte-order mark is fine)"


def _encoding_of(head: bytes) -> str:
    """The codec of a text file from its first bytes: the one its byte-order mark names, else UTF-8."""
    return next((codec for bom, codec in _BOMS if head.startswith(bom)), "utf-8")


def _unreadable(path: Path, exc: OSError) -> DomainError:
    return DomainError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions")


def _not_text(path: Path, encoding: str, exc: UnicodeDecodeError) -> DomainError:
    shown = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
    return DomainError(f"{path}: not {shown} text ({exc.reason} at byte {exc.start}); {_REMEDY_UTF8}")


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, or UTF-8/16/32 with a byte-order mark."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    encoding = _encoding_of(data[:4])
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _not_text(path, encoding, exc) from None


def _parse_json(text: str, path: Path, line: int | None, advice: str) -> Any:
    """``json.loads`` with every failure as a :class:`DomainError` naming the file and line."""
    where = str(path) if line is None else f"{path} line {line}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"{path} line {exc.lineno if line is None else line}"
        raise DomainError(f"{at}: not valid JSON ({exc.msg} at column {exc.colno}); {advice}") from None
    except RecursionError:
        raise DomainError(f"{where}: JSON nested too deeply to read; {advice}") from None
    except ValueError as exc:  # an integer with more digits than Python converts (sys.int_info)
        reason = str(exc).split(";")[0]
        raise DomainError(f"{where}: a JSON number is too long to read ({reason}); {advice}") from None


def _jsonl_rows(path: Path, text_field: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    """JSON lines (blank lines skipped, physical line numbers); a ``.json`` file may also be one array."""
    content = _read_text(path)
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        yield from _json_array_rows(path, content)
        return
    # Only \n, \r\n and \r end a line: str.splitlines would also split at U+2028, U+0085 and other
    # characters that json.dumps(ensure_ascii=False) leaves unescaped inside strings.
    for number, line in enumerate(_LINE_END.split(content), start=1):
        if not line.strip():
            continue
        row = _parse_json(line, path, number, "each line must hold one JSON object")
        if not isinstance(row, dict):
            raise DomainError(
                f"{path} line {number}: expected a JSON object like "
                f'{{"{text_field}": "...", "label": "..."}}, got a {type(row).__name__}'
            )
        yield row, f"{path} line {number}"


def _json_array_rows(path: Path, content: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    advice = "a .json file holds one array of objects, or one object per line"
    rows = _parse_json(content, path, None, advice)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DomainError(f"{path} record {number}: expected a JSON object, got a {type(row).__name__}")
        yield row, f"{path} record {number}"


def _csv_encoding_and_header(path: Path) -> tuple[str, list[str]]:
    """The CSV's codec (by byte-order mark) and its first record, read with the csv module."""
    try:
        with path.open("rb") as raw:
            encoding = _encoding_of(raw.read(4))
        with path.open(encoding=encoding, newline="") as handle:
            return encoding, next(csv.reader(handle), [])
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except UnicodeDecodeError as exc:
        raise _not_text(path, encoding, exc) from None
    except csv.Error as exc:
        raise DomainError(f"{path}: not valid CSV with a header row ({exc}); check the first line") from None


def _csv_rows(path: Path, text_field: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    import pandas as pd

    encoding, header = _csv_encoding_and_header(path)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DomainError(
            f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
            "rename or drop the copies so that each column has its own name"
        )
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype={text_field: str}, encoding=encoding)
    except pd.errors.EmptyDataError:
        return
    except UnicodeDecodeError as exc:
        raise _not_text(path, encoding, exc) from None
    except (pd.errors.ParserError, ValueError, OverflowError, csv.Error) as exc:
        raise DomainError(
            f"{path}: not valid CSV with a header row ({_first_line(exc)}); quote fields holding commas, "
            "quotes or line breaks, and give every row as many fields as the header"
        ) from None
    for index, row in enumerate(frame.to_dict("records")):
        yield row, f"{path} data line {index + 1}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parquet_rows(path: Path, text_field: str) -> Iterable[tuple[Mapping[str, Any], str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read()
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise DomainError(
            f"{path}: not a readable Parquet file ({_first_line(exc)}); re-write it (e.g. pandas to_parquet)"
        ) from None
    names = table.column_names
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DomainError(
            f"{path}: column(s) {', '.join(map(repr, repeated))} appear more than once; rename or drop the "
            "copies so that each column has its own name"
        )
    try:
        rows = table.to_pylist()
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise DomainError(
            f"{path}: a column cannot be read as Python values ({_first_line(exc)}); store text as a "
            "string column and labels as strings or integers"
        ) from None
    for index, row in enumerate(rows):
        yield row, f"{path} row {index}"
