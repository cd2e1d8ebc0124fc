"""A user's own domain from a recipe: :class:`DomainSource` in, :class:`~fanbu.data.domain.Domain` out.

Files are JSONL (or ``.json``), CSV, Parquet, a ``datasets`` ``save_to_disk`` directory (``hf_disk``)
or a hub dataset (``hf_hub``). For the two Hugging Face formats, ``train`` names the dataset and, when
it is a DatasetDict, the splits are its keys: ``train`` is read from key ``"train"`` (or the only key),
and ``validation`` / ``test`` / ``unlabeled`` name keys, defaulting to ``"validation"``, ``"test"`` and
``"unlabeled"`` when those keys exist. A ``save_to_disk`` directory holding a single ``Dataset`` is the
train split, and then ``validation`` / ``test`` / ``unlabeled`` are paths like for files. A split with
no source is carved from train, stratified by label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fanbu.config import Strict
from fanbu.data.domain import METRICS, Domain, Split, TaskKind
from fanbu.data.readers import Record, Table, read_records, read_table, resolve_format
from fanbu.errors import DomainError

__all__ = ["DomainSource", "load_domain", "read_records"]

OPTIONAL_SPLITS = ("validation", "test", "unlabeled")


class DomainSource(Strict):
    """A user's own domain, as written in a YAML recipe."""

    name: str = Field(min_length=1, description="Domain name, unique within a run (e.g. 'med'); no '.' (it names "
                      "the domain's head in every model).")
    task: TaskKind = Field(
        "classification", description="'classification' (text -> label) or 'causal_lm' (text only)."
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "hf_disk", "hf_hub"] = Field(
        "auto",
        description="File format; 'auto' goes by extension (.jsonl/.json JSON lines, .csv, .parquet) "
        "and treats a directory as hf_disk (a datasets save_to_disk directory).",
    )
    train: str = Field(
        description="Train data: a file path; for hf_disk a save_to_disk directory (DatasetDict or "
        "Dataset); for hf_hub a hub dataset name."
    )
    validation: str | None = Field(
        None,
        description="Validation data (a path; for a DatasetDict the split key). Default: the "
        "'validation' key of a DatasetDict, else carved from train.",
    )
    test: str | None = Field(
        None,
        description="Test data (a path; for a DatasetDict the split key). Default: the 'test' key of "
        "a DatasetDict, else carved from train.",
    )
    unlabeled: str | None = Field(
        None, description="Optional pool of unlabeled texts (a path; for a DatasetDict the split key)."
    )
    group: str | None = Field(
        None,
        description="The domain's parent group in a domain tree (hierarchical transfer: one adapter per group, "
        "named in the hierarchy recipe's tree.groups); null: directly under the shared trunk.",
    )
    text_field: str = Field("text", description="Name of the field/column holding the text.")
    label_field: str = Field(
        "label", description="Name of the field/column holding the label (classification)."
    )
    label_names: list[str] | None = Field(
        None,
        description="All label names, in id order; integer labels index this list and any other "
        "label is an error. Default: a ClassLabel's names, else the sorted distinct train labels.",
    )
    validation_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Share of the train data carved (stratified) for validation when none is given.",
    )
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Share of the train data carved (stratified) for test when none is given.",
    )
    hf_config: str | None = Field(None, description="Hub dataset config name (hf_hub only).")
    seed: int = Field(0, description="Seed of the carving, so the same recipe always gives the same splits.")
    metric: str | None = Field(
        None,
        description="Score metric: accuracy or macro_f1 (classification), perplexity (causal_lm). "
        "Default: accuracy / perplexity.",
    )

    @field_validator("name")
    @classmethod
    def _name_has_no_dot(cls, value: str) -> str:
        if "." in value:
            raise ValueError(f"domain name {value!r} contains '.', which cannot name the domain's head in a model; "
                             f"use '_' or '-' instead (e.g. {value.replace('.', '_')!r})")
        return value

    @field_validator("label_names")
    @classmethod
    def _distinct_names(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return names
        if len(names) < 2:
            raise ValueError("give at least 2 label names (or leave label_names unset)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"label names must be distinct; repeated: {', '.join(repeated)}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> DomainSource:
        if self.task == "causal_lm" and self.label_names is not None:
            raise ValueError("a causal_lm domain has no labels; remove label_names")
        if self.metric is not None and self.metric not in METRICS[self.task]:
            raise ValueError(
                f"metric {self.metric!r} does not apply to {self.task} (use {', '.join(METRICS[self.task])})"
            )
        if (
            self.validation is None
            and self.test is None
            and self.validation_fraction + self.test_fraction >= 1.0
        ):
            raise ValueError(
                "validation_fraction + test_fraction must stay below 1 so that some train data is left"
            )
        return self


def load_domain(source: DomainSource) -> Domain:
    """Read a user's domain, check its labels, carve missing splits from train, and build the Domain."""
    label_field = source.label_field if source.task == "classification" else None
    tables, described = _read_tables(source, label_field)
    names = _label_names(source, tables["train"]) if label_field is not None else ()
    splits = {
        key: _to_split(table, names, source, labeled=label_field is not None and key != "unlabeled")
        for key, table in tables.items()
    }
    train = splits["train"]
    carved_test = "test" not in splits
    if carved_test:
        splits["test"], train = train.stratified_split(source.test_fraction, source.seed)
        described["test"] = f"{source.test_fraction:.0%} of train"
    if "validation" not in splits:
        fraction = (
            source.validation_fraction / (1.0 - source.test_fraction)
            if carved_test
            else source.validation_fraction
        )
        splits["validation"], train = train.stratified_split(fraction, source.seed + 1)
        described["validation"] = f"{source.validation_fraction:.0%} of train"
    metric = source.metric or METRICS[source.task][0]
    try:
        return Domain(
            name=source.name,
            task=source.task,
            train=train,
            validation=splits["validation"],
            test=splits["test"],
            label_names=names,
            unlabeled=splits.get("unlabeled"),
            metric=metric,
            source="; ".join(f"{key}: {where}" for key, where in described.items()),
        )
    except DomainError as exc:  # e.g. a split carved from too few train records is empty: name the file
        raise DomainError(f"{source.train}: {exc}") from None


def _read_tables(source: DomainSource, label_field: str | None) -> tuple[dict[str, Table], dict[str, str]]:
    """Read every split that has a source; returns tables and a description of where each came from."""
    if source.format != "hf_hub":
        _require_exists(source, "train", source.train)
    fmt = resolve_format(source.train, source.format)
    if fmt in ("hf_disk", "hf_hub"):
        from fanbu.data import hf

        dataset = (
            hf.load_hub(source.train, source.hf_config)
            if fmt == "hf_hub"
            else hf.load_disk(Path(source.train))
        )
        keys = hf.split_names(dataset)
        if keys is not None:
            return _read_dataset_dict(source, dataset, keys, fmt, label_field)
        train = hf.table_from_hf(dataset, source.train, "train", source.text_field, label_field)
    else:
        train = read_table(source.train, fmt=fmt, text_field=source.text_field, label_field=label_field)
    tables = {"train": _non_empty(train, source, "train", source.train)}
    described = {"train": f"{fmt} {source.train}"}
    other_fmt = source.format if source.format in ("jsonl", "csv", "parquet") else "auto"
    for key in OPTIONAL_SPLITS:
        path = getattr(source, key)
        if path is None:
            continue
        _require_exists(source, key, path)
        field = None if key == "unlabeled" else label_field
        table = read_table(path, fmt=other_fmt, text_field=source.text_field, label_field=field, split=key)
        tables[key] = _non_empty(table, source, key, path)
        described[key] = path
    return tables, described


def _read_dataset_dict(
    source: DomainSource, dataset: object, keys: list[str], fmt: str, label_field: str | None
) -> tuple[dict[str, Table], dict[str, str]]:
    from fanbu.data import hf

    hint = f"set train of domain '{source.name}' to a dataset with a 'train' split"
    train_split = hf.pick_split(dataset, source.train, "train", hint)
    train = hf.table_from_hf(train_split, source.train, "train", source.text_field, label_field)
    tables = {"train": _non_empty(train, source, "train", f"{source.train} [train]")}
    described = {"train": f"{fmt} {source.train} [train]"}
    for key in OPTIONAL_SPLITS:
        chosen = getattr(source, key)
        if chosen is None and key not in keys:
            continue
        name = chosen or key
        if name not in keys:
            raise DomainError(
                f"{source.train}: no split {name!r} (splits: {', '.join(keys)}; "
                f"set {key} of domain '{source.name}' to one of them, or leave it unset to carve it from train)"
            )
        field = None if key == "unlabeled" else label_field
        table = hf.table_from_hf(dataset, source.train, name, source.text_field, field)
        tables[key] = _non_empty(table, source, key, f"{source.train} [{name}]")
        described[key] = f"{source.train} [{name}]"
    return tables, described


def _require_exists(source: DomainSource, key: str, path: str) -> None:
    if not Path(path).exists():
        raise DomainError(f"{path}: file not found (set {key} of domain '{source.name}' to an existing file)")


def _non_empty(table: Table, source: DomainSource, key: str, where: str) -> Table:
    if not table.records:
        advice = (
            "add records to it"
            if key == "train"
            else f"add records to it, or remove {key} to carve it from train"
        )
        raise DomainError(
            f"{where}: no records for the {key} split of domain '{source.name}' (it is empty; {advice})"
        )
    return table


def _normalise(record: Record) -> int | str:
    """A raw label as an int or a str; integral floats (from CSV/Parquet) count as ints."""
    label = record.label
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if isinstance(label, int | str) and not isinstance(label, bool):
        return label
    raise DomainError(
        f"{record.where}: label {label!r} is a {type(label).__name__}; labels must be strings or "
        "integers (check label_field)"
    )


def _label_names(source: DomainSource, train: Table) -> tuple[str, ...]:
    if source.label_names is not None:
        return tuple(source.label_names)
    if train.label_names is not None:
        return train.label_names
    values = {_normalise(record) for record in train.records}
    if all(isinstance(v, int) for v in values):
        names = tuple(str(v) for v in sorted(values))
    else:
        names = tuple(sorted(str(v) for v in values))
    if len(names) < 2:
        raise DomainError(
            f"{source.train}: every train example has label {names[0]!r}; a classification domain needs at "
            f"least two labels (check label_field, or give label_names of domain '{source.name}')"
        )
    return names


def _to_split(table: Table, names: tuple[str, ...], source: DomainSource, labeled: bool) -> Split:
    texts = tuple(record.text for record in table.records)
    if not labeled:
        return Split(texts)
    index = {name: i for i, name in enumerate(names)}
    ints_index = source.label_names is not None
    labels = []
    for record in table.records:
        value = _normalise(record)
        if isinstance(value, int) and ints_index:
            if not 0 <= value < len(names):
                raise DomainError(
                    f"{record.where}: label id {value} is out of range for the {len(names)} label_names "
                    f"({', '.join(names)}); use an id 0..{len(names) - 1} or a name, or add it to label_names"
                )
            labels.append(value)
            continue
        key = str(value)
        if key not in index:
            raise DomainError(
                f"{record.where}: unknown label {value!r} (allowed: {', '.join(names)}; "
                f"add it to label_names of domain '{source.name}')"
            )
        labels.append(index[key])
    return Split(texts, tuple(labels))
