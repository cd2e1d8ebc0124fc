"""Property-based fuzzing of the domain loaders: JSONL, JSON, CSV and Parquet files with broken rows,
encodings and bytes.

The contract: :func:`fanbu.data.loaders.load_domain` either loads the file correctly (every text a
non-empty str that encodes as UTF-8, every label a valid id, every split non-empty) or raises
:class:`~fanbu.errors.DomainError` naming the file, and the line or row when one row is at fault.
No other exception ever escapes. When a file is written losslessly and every row is valid, the load
must succeed and give back exactly the rows written, each with its own label.

A case that breaks the contract is *counted* (and its first examples kept), not raised, so one run
reports every kind of failure: an exception other than ``DomainError`` is a traceback, a wrong answer
(an error that does not name the file, a clean file refused or loaded with other rows) a contract
violation. The CI test (``tests/fuzz/test_fuzz_loaders.py``) fails on any; ``fanbu bench
reliability`` reports the counts over a larger run.

Needs ``hypothesis`` (the ``dev`` extra).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from fanbu.bench.reliability.shown import clip, innermost, shown
from fanbu.data.domain import Domain
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.errors import DomainError

KEEP_FAILURES = 20  # examples of failures kept per run (every one is counted)
#: The formats fuzzed, and their shares of a run (the CI test runs exactly these counts).
WEIGHTS = {"jsonl": 110, "json": 40, "csv": 100, "parquet": 80}
SUFFIX = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "parquet": ".parquet"}

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
PARQUET_TYPES = st.sampled_from(["natural", "natural", "natural", "string", "large_string", "binary", "int64",
                                 "float64", "bool", "null", "list", "dictionary", "struct", "timestamp"])
CSV_HEADERS = st.sampled_from(["plain", "plain", "plain", "duplicate_text", "duplicate_label", "no_label",
                               "no_text", "blank_name", "huge_name", "only_header", "extra_column"])

ROW_LEVEL = re.compile(r"field is empty|no '.*' field|is a \w+, not text|labels must be|unknown label|"
                       r"unpaired surrogate|out of range for")
WHERE = re.compile(r"(line|row|record) \d+")


@dataclass
class LoaderTally:
    """What a run tried and found; ``failures`` keeps the first :data:`KEEP_FAILURES` in words.

    ``tracebacks``: loads that raised anything but ``DomainError``; ``contract_violations``: wrong
    answers; ``fuzzer_errors``: the fuzzer itself failed to write a case (a bug here, not in fanbu).
    ``digest`` hashes every case generated: two runs with the same seed have the same digest.
    """

    cases: int = 0
    cases_by_format: Counter[str] = field(default_factory=Counter)
    loaded: int = 0  # files that loaded (and were checked)
    refused: int = 0  # files refused with a DomainError
    exact: int = 0  # clean files that loaded and were compared row for row
    tracebacks: int = 0
    contract_violations: int = 0
    fuzzer_errors: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    digest: str = ""

    def fail(self, kind: str, what: str, detail: str) -> None:
        """Count one failure of ``kind`` (``traceback``, ``contract`` or ``fuzzer``), keep its words."""
        if kind == "traceback":
            self.tracebacks += 1
        elif kind == "contract":
            self.contract_violations += 1
        else:
            self.fuzzer_errors += 1
        if len(self.failures) < KEEP_FAILURES:
            self.failures.append(f"{what}\n{detail}")


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


# ---------------------------------------------------------------------------- writing a case's file


def apply_row_mutations(case: dict[str, Any], fields: tuple[str, str]) -> list[dict[str, Any]]:
    """The case's rows under ``fields``' names, with its row mutations applied."""
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
    """The file's bytes, before any byte mutation."""
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
    """``data`` with the byte mutations applied in turn."""
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


# ---------------------------------------------------------------------------- what must come back


def _name(raw: Any, label_names: list[str] | None) -> str:
    value = int(raw) if isinstance(raw, float) and raw.is_integer() else raw
    return label_names[value] if label_names is not None and isinstance(value, int) else str(value)


def expected_rows(case: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, str]) -> Counter[Any] | None:
    """The ``(text, label name)`` pairs a clean file must load as (label ``None`` for causal_lm);
    ``None`` for a file that is not clean."""
    if not clean(case):
        return None
    text_field, label_field = fields
    labeled = case["task"] == "classification"
    return Counter((r[text_field], _name(r[label_field], case["label_names"]) if labeled else None) for r in rows)


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


def refusal_problem(message: str, path: Path, must_load: bool) -> str | None:
    """What is wrong with a ``DomainError`` for the file at ``path``; ``None`` when nothing is."""
    if str(path) not in message:
        return f"the error does not name the file: {clip(message)}"
    if ROW_LEVEL.search(message) and not WHERE.search(message):
        return f"a row-level error without its line/row: {clip(message)}"
    if must_load:
        return f"a clean file failed to load: {clip(message)}"
    return None


def loaded_problem(domain: Domain, want: Counter[Any] | None, as_validation: bool) -> str | None:
    """What is wrong with a loaded domain (well formed; from a clean file exactly the rows written,
    ``want``); ``None`` when nothing is. Anything the domain raises here escapes, as a traceback."""
    splits = {"train": domain.train, "validation": domain.validation, "test": domain.test}
    for name, split in splits.items():
        if len(split) == 0:
            return f"the {name} split is empty"
        bad = [text for text in split.texts if not (isinstance(text, str) and text and _utf8(text))]
        if bad:
            return f"the {name} split holds {len(bad)} texts that are no non-empty UTF-8 str, e.g. {shown(bad[0])}"
        if domain.task == "classification":
            if split.labels is None or len(split.labels) != len(split.texts):
                return f"the {name} split's labels do not match its texts"
            wrong = [label for label in split.labels if not 0 <= label < len(domain.label_names)]
            if wrong:
                return f"the {name} split holds label ids out of range: {wrong[:5]} ({len(domain.label_names)} labels)"
        elif split.labels is not None:
            return f"a {domain.task} domain's {name} split has labels"
    if domain.task == "classification":
        names = list(domain.label_names)
        if len(names) < 2 or len(set(names)) != len(names):
            return f"label names are fewer than two or repeated: {shown(names)}"
    domain.fingerprints()  # hashes every text: raises on text that is not valid Unicode
    if want is None:
        return None
    got = Counter(
        (text, None if split.labels is None else domain.label_names[split.labels[i]])
        for split in ([domain.validation] if as_validation else splits.values())
        for i, text in enumerate(split.texts)
    )
    if got != want:
        return (f"the clean file loaded other rows: missing {shown(list((want - got).items())[:3])}, "
                f"extra {shown(list((got - want).items())[:3])}")
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------- the run


class _LoaderFuzzer:
    """Writes each case's file under ``root``, loads it and counts what came back in ``tally``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tally = LoaderTally()
        self._hash = hashlib.sha256()

    def check(self, case: dict[str, Any]) -> None:
        tally = self.tally
        index, fmt = tally.cases, case["fmt"]
        tally.cases += 1
        tally.cases_by_format[fmt] += 1
        self._hash.update(repr(case).encode("utf-8", "surrogatepass"))
        what = f"{fmt} case {index}: {shown(case)}"
        work = self.root / f"{index:07d}"
        try:
            try:
                path, source, must_load, want = self._write(case, work)
            except Exception as exc:  # noqa: BLE001 - the fuzzer's own bug: counted apart, the run goes on
                tally.fail("fuzzer", f"writing {what}", innermost(exc))
                return
            try:
                domain = load_domain(source)
            except DomainError as exc:
                tally.refused += 1
                problem = refusal_problem(str(exc), path, must_load)
                if problem:
                    tally.fail("contract", what, problem)
                return
            except Exception as exc:  # noqa: BLE001 - the contract allows DomainError only
                tally.fail("traceback", what, innermost(exc))
                return
            tally.loaded += 1
            try:
                problem = loaded_problem(domain, want, case["as_validation"])
            except Exception as exc:  # noqa: BLE001 - the loaded domain itself raised
                tally.fail("traceback", f"{what}\n(raised by the loaded domain)", innermost(exc))
                return
            if problem:
                tally.fail("contract", what, problem)
            elif want is not None:
                tally.exact += 1
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _write(self, case: dict[str, Any], work: Path) -> tuple[Path, DomainSource, bool, Counter[Any] | None]:
        """Write the case's file (and a clean train file when it is the validation split) into ``work``."""
        fields = case["fields"]
        rows = apply_row_mutations(case, fields)
        work.mkdir(parents=True)
        path = work / f"data{SUFFIX[case['fmt']]}"
        path.write_bytes(damage(serialise(case, rows, fields), case["bytes"]))
        text_field, label_field = fields
        options: dict[str, Any] = {"task": case["task"], "text_field": text_field, "label_field": label_field}
        if case["label_names"] is not None:
            options["label_names"] = case["label_names"]
        if case["as_validation"]:
            train = work / "train.jsonl"
            train.write_text(
                "".join(json.dumps({text_field: f"t{i}", label_field: STR_LABELS[i % 3]}) + "\n" for i in range(9))
            )
            source = DomainSource(name="fz", train=str(train), validation=str(path), **options)
        else:
            source = DomainSource(name="fz", train=str(path), **options)
        return path, source, expect_success(case, rows, fields), expected_rows(case, rows, fields)


def split_cases(n: int, weights: dict[str, int]) -> dict[str, int]:
    """``n`` cases shared by ``weights`` (largest remainders): they add up to ``n``, each at least one."""
    total = sum(weights.values())
    exact = {key: n * weight / total for key, weight in weights.items()}
    counts = {key: int(share) for key, share in exact.items()}
    for key in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[key] += 1
    return {key: max(1, count) for key, count in counts.items()}


def _search(strategy: st.SearchStrategy[Any], n: int, seed: int | None, body: Callable[[Any], None]) -> None:
    """Run ``body`` on ``n`` examples of ``strategy``; reproducible when ``seed`` is given."""

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case: Any) -> None:
        body(case)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    run()


def run_loader_fuzz(n: int, seed: int | None = None, formats: Sequence[str] | None = None) -> LoaderTally:
    """About ``n`` generated files (exactly ``n`` when ``n`` >= the number of formats), shared over
    ``formats`` (default: every one of :data:`WEIGHTS`, in its proportions), each loaded and checked.

    With ``seed``, the same cases are generated every time. Files go in a temporary directory,
    removed after.
    """
    formats = list(formats or WEIGHTS)
    unknown = sorted(set(formats) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; known: {', '.join(WEIGHTS)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fanbu-fuzz-loaders-") as tmp:
        fuzzer = _LoaderFuzzer(Path(tmp))
        for fmt, count in split_cases(n, {fmt: WEIGHTS[fmt] for fmt in formats}).items():
            _search(cases(fmt), count, seed, fuzzer.check)
    tally = fuzzer.tally
    tally.seconds = time.perf_counter() - started
    tally.digest = fuzzer._hash.hexdigest()
    return tally
