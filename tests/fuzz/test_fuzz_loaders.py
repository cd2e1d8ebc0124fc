"""Fuzz the domain loaders: JSONL, JSON, CSV and Parquet files with broken rows, encodings and bytes.

The contract: :func:`fanbu.data.loaders.load_domain` either loads the file correctly (every text a
str that encodes as UTF-8, every label a valid id, every split non-empty) or raises
:class:`~fanbu.errors.DomainError` naming the file, and the line or row when one row is at fault.
No other exception ever escapes. When a file is written losslessly and every row is valid, the load
must succeed and give back exactly the rows written, each with its own label.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, note
from hypothesis import strategies as st

from fanbu.data.domain import Domain
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.errors import DomainError
from tests.fuzz.budget import fuzz_settings, run_counted

CASES: Counter[str] = Counter()  # cases run per target; see tests.fuzz.budget

STR_LABELS = ("a", "b", "c")
INT_LABELS = (0, 1, 2)
LOSSLESS = ("utf-8", "utf-8-sig", "utf-16", "utf-32")  # what the loaders read back exactly (BOM or UTF-8)
ENCODINGS = (*LOSSLESS, "utf-16-le", "latin-1", "cp1252")
BENIGN = ("extra_field", "huge_text")  # row mutations that keep a row valid

# Valid texts, including characters that trip line splitting, CSV quoting or NUL handling.
good_text = st.text(min_size=1, max_size=30).filter(lambda t: t.strip()) | st.sampled_from(
    ["a\u2028b", "a\x85b", "a\rb", "a\r\nb", "\ufeffa", "a,b", 'say "hi"', "NaN", "null", "#a", "a\tb", "é"]
)
bad_texts = st.sampled_from(["\ud800", "a\udfffb", "", " \t ", "\n"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["", "  ", "\ud800", "a\udfffb", "nan", "NULL", "1.5", "x" * 300]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
# A row mutation: (kind, which row (fraction of the row count), a value).
row_mutations = st.tuples(
    st.sampled_from(["set_text", "set_label", "drop_text", "drop_label", "extra_field", "huge_text"]),
    st.floats(0, 1, exclude_max=True),
    bad_texts | json_values,
)
# A byte mutation of the written file: (kind, where (fraction of its length), bytes).
byte_mutations = st.tuples(
    st.sampled_from(["insert", "truncate", "flip", "replace_all"]),
    st.floats(0, 1),
    st.binary(min_size=1, max_size=24),
)
JUNK_LINES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[" * 20_000, "{" * 20_000, '{"text": ' + "7" * 5000 + "}", "1", "[]", "null", '"text"',
                     '{"text": "x", "label": NaN}', '{"text": "\\ud800", "label": "a"}', "\ufeff{}",
                     '{"text": "x", "text": 1, "label": "a"}', "{'text': 'x'}"]),
)


@st.composite
def cases(draw: st.DrawFn, fmt: str) -> dict[str, Any]:
    """One file to load: its rows, how they are broken, written and damaged, and the recipe reading it."""
    task = draw(st.sampled_from(["classification", "classification", "causal_lm"]))
    pool = draw(st.sampled_from([STR_LABELS, INT_LABELS, ("a", 1, "b", 2)]))
    as_validation = draw(st.integers(0, 4)) == 0  # the file is the validation split of a clean train file
    label_names = None
    if task == "classification" and not as_validation and pool == INT_LABELS and draw(st.booleans()):
        label_names = ["zero", "one", "two"]
    size = draw(st.sampled_from([0, 1, 2, 4, 7, 12, 12, 18, 18, 25]))  # mostly enough rows to load
    row = st.fixed_dictionaries({"text": good_text, "label": st.sampled_from(pool)})
    rows = draw(st.lists(row, min_size=size, max_size=size))
    return {
        "fmt": fmt,
        "fields": draw(st.sampled_from([("text", "label"), ("body", "y")])),
        "duplicate_column": fmt == "parquet" and draw(st.integers(0, 9)) == 0,
        "task": task,
        "label_names": label_names,
        "rows": rows,
        "mutations": draw(st.lists(row_mutations, max_size=3) | st.just([])),
        "junk": draw(st.lists(st.tuples(st.floats(0, 1), JUNK_LINES), max_size=2) | st.just([]))
        if fmt in ("jsonl", "json")
        else [],
        "encoding": draw(st.sampled_from(LOSSLESS) | st.sampled_from(ENCODINGS)),
        "ensure_ascii": draw(st.booleans()),
        "array": fmt == "json" and draw(st.booleans()),
        "bytes": draw(st.lists(byte_mutations, max_size=2) | st.just([])),
        "as_validation": as_validation,
        "parquet_types": draw(st.tuples(PARQUET_TYPES, PARQUET_TYPES)) if fmt == "parquet" else None,
        "csv_header": draw(CSV_HEADERS) if fmt == "csv" else None,
    }


PARQUET_TYPES = st.sampled_from(["natural", "natural", "natural", "string", "large_string", "binary", "int64",
                                 "float64", "bool", "null", "list", "dictionary", "struct", "timestamp"])
CSV_HEADERS = st.sampled_from(["plain", "plain", "plain", "duplicate_text", "duplicate_label", "no_label",
                               "no_text", "blank_name", "huge_name", "only_header", "extra_column"])


def apply_row_mutations(case: dict[str, Any], fields: tuple[str, str]) -> list[dict[str, Any]]:
    text_field, label_field = fields
    rows = [{text_field: r["text"], label_field: r["label"]} for r in case["rows"]]
    for kind, where, value in case["mutations"]:
        if not rows:
            break
        row = rows[int(where * len(rows))]
        if kind == "set_text":
            row[text_field] = value
        elif kind == "set_label":
            row[label_field] = value
        elif kind == "drop_text":
            row.pop(text_field, None)
        elif kind == "drop_label":
            row.pop(label_field, None)
        elif kind == "extra_field":
            row[f"extra_{len(row)}"] = value
        else:  # a huge but valid text
            row[text_field] = "huge " * 60_000
    return rows


def clean(case: dict[str, Any]) -> bool:
    """Whether the file holds exactly its valid rows, so that what loads must equal what was written."""
    return (
        case["encoding"] in LOSSLESS
        and not case["bytes"]
        and not case["junk"]
        and all(kind in BENIGN and _encodable(value) for kind, _, value in case["mutations"])
        and case["csv_header"] in (None, "plain", "extra_column")
        and case["parquet_types"] in (None, ("natural", "natural"))
        and not case["duplicate_column"]
    )


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def serialise(case: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, str]) -> bytes:
    fmt = case["fmt"]
    if fmt == "parquet":
        return parquet_bytes(case, rows, fields)
    if fmt == "csv":
        text = csv_text(case, rows, fields)
    elif case["array"]:
        text = json.dumps(rows, ensure_ascii=case["ensure_ascii"], indent=1)
    else:
        lines = [json.dumps(r, ensure_ascii=case["ensure_ascii"]) for r in rows]
        for where, junk in case["junk"]:
            lines.insert(int(where * len(lines)), junk)
        text = "\n".join(lines) + "\n"
    return text.encode(case["encoding"], errors="surrogatepass" if "utf" in case["encoding"] else "replace")


def csv_text(case: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, str]) -> str:
    text_field, label_field = fields
    header = {
        "plain": [text_field, label_field],
        "duplicate_text": [text_field, label_field, text_field],
        "duplicate_label": [label_field, text_field, label_field],
        "no_label": [text_field],
        "no_text": [label_field],
        "blank_name": [text_field, "", label_field],
        "huge_name": [text_field, label_field, "h" * 200_000],
        "only_header": [text_field, label_field],
        "extra_column": ["id", text_field, label_field],
    }[case["csv_header"]]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    if case["csv_header"] == "only_header":
        return out.getvalue()
    for index, row in enumerate(rows):
        writer.writerow([index if name == "id" else _cell(row.get(name)) for name in header])
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def parquet_bytes(case: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, str]) -> bytes:
    try:
        return _parquet(case["parquet_types"], rows, fields, case["duplicate_column"])
    except pa.ArrowException:  # a column Parquet cannot store (e.g. a struct without fields): as text
        return _parquet(("string", "string"), rows, fields, case["duplicate_column"])


def _parquet(kinds: tuple[str, str], rows: list[dict[str, Any]], fields: tuple[str, str], dup: bool) -> bytes:
    arrays = [_arrow_column([r.get(name) for r in rows], kind) for name, kind in zip(fields, kinds, strict=True)]
    names = list(fields)
    if dup:
        arrays.append(arrays[0])
        names.append(names[0])
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=names), sink)
    return sink.getvalue()


def _arrow_column(values: list[Any], kind: str) -> pa.Array:
    """The column as ``kind``; values that do not fit it are stored as their JSON text (or null)."""
    if kind == "natural":
        try:
            return pa.array(values)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            kind = "string"
    as_text = [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
    as_text = [None if v is None else v.encode("utf-8", "replace").decode("utf-8") for v in as_text]
    if kind in ("string", "large_string"):
        return pa.array(as_text, type=pa.string() if kind == "string" else pa.large_string())
    if kind == "binary":
        return pa.array([None if v is None else v.encode() for v in as_text], type=pa.binary())
    if kind == "int64":
        return pa.array([hash(v) % 7 if v is not None else None for v in as_text], type=pa.int64())
    if kind == "float64":
        return pa.array([float(len(v)) + 0.5 if v is not None else float("nan") for v in as_text])
    if kind == "bool":
        return pa.array([None if v is None else len(v) % 2 == 0 for v in as_text], type=pa.bool_())
    if kind == "null":
        return pa.nulls(len(values))
    if kind == "list":
        return pa.array([[len(v or "")] for v in as_text], type=pa.list_(pa.int64()))
    if kind == "dictionary":
        return pa.array(as_text, type=pa.string()).dictionary_encode()
    if kind == "struct":
        return pa.array([{"v": v} for v in as_text], type=pa.struct([("v", pa.string())]))
    return pa.array([len(v or "") for v in as_text], type=pa.timestamp("s"))


def damage(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    for kind, where, chunk in mutations:
        at = int(where * len(data))
        if kind == "insert":
            data = data[:at] + chunk + data[at:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ (chunk[0] or 1)]) + data[at + 1 :]
        elif kind == "replace_all":
            data = chunk * (1 + at % 7)
    return data


def check_loaded(domain: Domain, case: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, str]) -> None:
    """A successful load is a well-formed domain; from a clean file it holds exactly the rows written."""
    splits = [domain.train, domain.validation, domain.test]
    assert all(len(split) > 0 for split in splits)
    for split in splits:
        assert all(isinstance(text, str) and text.encode("utf-8") for text in split.texts)
        if domain.task == "classification":
            assert split.labels is not None and len(split.labels) == len(split.texts)
            assert all(0 <= label < len(domain.label_names) for label in split.labels)
        else:
            assert split.labels is None
    if domain.task == "classification":
        assert len(domain.label_names) >= 2 and len(set(domain.label_names)) == len(domain.label_names)
    domain.fingerprints()  # hashes every text: fails on text that is not valid Unicode
    if not clean(case):
        return
    text_field, label_field = fields
    got = Counter(
        (text, None if split.labels is None else domain.label_names[split.labels[i]])
        for split in ([domain.validation] if case["as_validation"] else splits)
        for i, text in enumerate(split.texts)
    )
    labeled = domain.task == "classification"
    want = Counter((r[text_field], _name(r[label_field], case["label_names"]) if labeled else None) for r in rows)
    assert got == want


def _name(raw: Any, label_names: list[str] | None) -> str:
    value = int(raw) if isinstance(raw, float) and raw.is_integer() else raw
    return label_names[value] if label_names is not None and isinstance(value, int) else str(value)


def expect_success(case: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, str]) -> bool:
    """Whether a clean file must load: enough rows of enough labels that every carved split is non-empty."""
    if not clean(case):
        return False
    _, label_field = fields
    if case["task"] == "causal_lm":
        return len(rows) >= (1 if case["as_validation"] else 3)
    labels = Counter(_name(r[label_field], case["label_names"]) for r in rows)
    if case["as_validation"]:
        return bool(rows) and set(labels) <= set(STR_LABELS) and case["label_names"] is None
    return len(labels) >= 2 and min(labels.values()) >= 3


def _shown(value: Any) -> str:
    """A repr short enough to read (a huge text or column name shown by its length)."""
    return re.sub(r"(.)\1{200,}", lambda m: f"{m.group(1)}*{len(m.group(0))}", repr(value))


ROW_LEVEL = re.compile(r"field is empty|no '.*' field|is a \w+, not text|labels must be|unknown label|"
                       r"unpaired surrogate|out of range for")
WHERE = re.compile(r"(line|row|record) \d+")


def check_case(case: dict[str, Any]) -> None:
    CASES["loaders"] += 1
    note(f"case: {_shown(case)}")
    fields = case["fields"]
    rows = apply_row_mutations(case, fields)
    suffix = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "parquet": ".parquet"}[case["fmt"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(damage(serialise(case, rows, fields), case["bytes"]))
        text_field, label_field = fields
        options: dict[str, Any] = {"task": case["task"], "text_field": text_field, "label_field": label_field}
        if case["label_names"] is not None:
            options["label_names"] = case["label_names"]
        if case["as_validation"]:
            train = Path(tmp) / "train.jsonl"
            train.write_text(
                "".join(json.dumps({text_field: f"t{i}", label_field: STR_LABELS[i % 3]}) + "\n" for i in range(9))
            )
            source = DomainSource(name="fz", train=str(train), validation=str(path), **options)
        else:
            source = DomainSource(name="fz", train=str(path), **options)
        try:
            domain = load_domain(source)
        except DomainError as exc:
            message = str(exc)
            assert str(path) in message, f"the error does not name the file: {message[:300]}"
            if ROW_LEVEL.search(message):
                assert WHERE.search(message), f"a row-level error without its line/row: {message[:300]}"
            assert not expect_success(case, rows, fields), f"a clean file failed to load: {message[:300]}"
            return
        check_loaded(domain, case, rows, fields)


@given(cases("jsonl"))
@fuzz_settings(110)
def _fuzz_jsonl(case: dict[str, Any]) -> None:
    check_case(case)


@given(cases("json"))
@fuzz_settings(40)
def _fuzz_json(case: dict[str, Any]) -> None:
    check_case(case)


@given(cases("csv"))
@fuzz_settings(100)
def _fuzz_csv(case: dict[str, Any]) -> None:
    check_case(case)


@given(cases("parquet"))
@fuzz_settings(80)
def _fuzz_parquet(case: dict[str, Any]) -> None:
    check_case(case)


def test_fuzz_jsonl_files() -> None:
    run_counted(CASES, "loaders", _fuzz_jsonl, 110)


def test_fuzz_json_files() -> None:
    run_counted(CASES, "loaders", _fuzz_json, 40)


def test_fuzz_csv_files() -> None:
    run_counted(CASES, "loaders", _fuzz_csv, 100)


def test_fuzz_parquet_files() -> None:
    run_counted(CASES, "loaders", _fuzz_parquet, 80)
