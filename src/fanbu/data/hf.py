"""Hugging Face ``datasets`` sources: ``save_to_disk`` directories and hub datasets.

A source is either a ``Dataset`` (one split) or a ``DatasetDict`` whose keys name the splits. A
``ClassLabel`` label column is read as its names, and those names become the domain's label names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fanbu.data.table import Table, extract
from fanbu.errors import DomainError


def load_disk(path: Path) -> Any:
    """``datasets.load_from_disk``, with a clear error for a directory that is not a saved dataset."""
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DomainError(
            f"{path}: not a dataset directory written by save_to_disk ({exc}); save it with "
            "Dataset.save_to_disk / DatasetDict.save_to_disk, or point at a jsonl/csv/parquet file"
        ) from None


def load_hub(name: str, config: str | None) -> Any:
    """``datasets.load_dataset(name, config)``; any failure says to use a local file or ``hf_disk``."""
    import datasets

    try:
        return datasets.load_dataset(name, config)
    except Exception as exc:  # noqa: BLE001 - requests, httpx, hub and datasets errors share no base
        shown = name if config is None else f"{name} (config {config})"
        raise DomainError(
            f"{shown}: could not load it from the Hugging Face hub, which could not be reached or has "
            f"no such dataset ({type(exc).__name__}: {exc}); use a local file (jsonl, csv, parquet) "
            "or a directory saved with save_to_disk and format hf_disk"
        ) from None


def split_names(source: Any) -> list[str] | None:
    """The keys of a DatasetDict, or ``None`` for a single ``Dataset``."""
    import datasets

    if isinstance(source, datasets.DatasetDict | datasets.IterableDatasetDict):
        return list(source.keys())
    return None


def pick_split(source: Any, location: str, split: str, hint: str = "") -> Any:
    """The ``split`` of a DatasetDict (or its only split); a plain Dataset is returned as it is."""
    keys = split_names(source)
    if keys is None:
        return source
    if split in keys:
        return source[split]
    if len(keys) == 1:
        return source[keys[0]]
    advice = hint or "name one of them"
    raise DomainError(f"{location}: no split {split!r} (splits: {', '.join(keys)}; {advice})")


def table_from_hf(source: Any, location: str, split: str, text_field: str, label_field: str | None) -> Table:
    """Read one split of a Dataset/DatasetDict into a :class:`Table`."""
    import datasets

    dataset = pick_split(source, location, split)
    if isinstance(dataset, datasets.IterableDataset):
        rows = list(dataset)
        features = dataset.features or {}
    else:
        rows = dataset.to_list()
        features = dataset.features
    names: tuple[str, ...] | None = None
    feature = features.get(label_field) if label_field is not None else None
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
        rows = [{**row, label_field: _class_name(row.get(label_field), names)} for row in rows]
    shown = location if split_names(source) is None else f"{location} [{split}]"
    records = [extract(row, f"{shown} row {i}", text_field, label_field) for i, row in enumerate(rows)]
    return Table(records, names)


def _class_name(value: object, names: tuple[str, ...]) -> object:
    """A ClassLabel id as its name; -1 (datasets' "no label") becomes missing."""
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return None
