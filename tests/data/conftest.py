"""Small data fixtures written into tmp_path: JSONL, CSV, Parquet and save_to_disk sources."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

Rows = list[dict[str, Any]]


def _rows(labels: Sequence[str], per_label: int) -> Rows:
    return [
        {"text": f"{label} example number {i} about {label}", "label": label}
        for label in labels
        for i in range(per_label)
    ]


@pytest.fixture
def make_rows() -> Callable[[Sequence[str], int], Rows]:
    """Rows with ``per_label`` examples of each label, texts distinct."""
    return _rows


@pytest.fixture
def write_jsonl() -> Callable[[Path, Rows], Path]:
    """Write rows as JSON lines."""

    def write(path: Path, rows: Rows) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_csv() -> Callable[[Path, Rows], Path]:
    """Write rows as CSV with a header (pandas)."""
    import pandas as pd

    def write(path: Path, rows: Rows) -> Path:
        pd.DataFrame(rows).to_csv(path, index=False)
        return path

    return write


@pytest.fixture
def write_parquet() -> Callable[[Path, Rows], Path]:
    """Write rows as a Parquet file (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(path: Path, rows: Rows) -> Path:
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    return write


@pytest.fixture
def labeled_jsonl(tmp_path: Path, write_jsonl: Callable[[Path, Rows], Path]) -> Path:
    """A 3-label JSONL train file with 20 examples per label."""
    return write_jsonl(tmp_path / "train.jsonl", _rows(["neg", "neu", "pos"], 20))
