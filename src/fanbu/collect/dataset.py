"""Collected datasets on disk and back: JSONL per domain, a manifest, a content fingerprint.

A collected dataset is a directory ``<home>/datasets/<name>/<fingerprint[:12]>/`` holding, per domain,
``<domain>.jsonl`` (``text``, ``label`` name, ``tier``, ``prediction_id``) and
``<domain>.unlabeled.jsonl`` (``text``), plus ``manifest.json``. The fingerprint is the sha256 of the
texts, labels and label names, so the same curation gives the same dataset id. Feedback recipes read
it with :func:`load_collected`; :func:`collected_sources` gives ``fanbu.data`` domain sources.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanbu.data.loaders import DomainSource
from fanbu.data.readers import read_table
from fanbu.errors import ConfigError, DomainError, RegistryError
from fanbu.io import atomic_directory, atomic_write_json, check_path_name, safe_child, sha256_json
from fanbu.registry import DatasetRecord, Registry

if TYPE_CHECKING:
    from fanbu.collect.curated import CurateConfig, Curated

MANIFEST = "manifest.json"
KIND = "collected"


def _fingerprint(
    labeled: dict[str, list[tuple[str, str]]],
    unlabeled: dict[str, list[str]],
    label_names: dict[str, list[str]],
) -> str:
    return sha256_json({"labeled": labeled, "unlabeled": unlabeled, "label_names": label_names})


def write_collected(
    registry: Registry, config: CurateConfig, curated: Curated
) -> tuple[DatasetRecord, dict[str, Any]]:
    """Write ``curated`` (unless that content exists already) and register it; returns record and counts."""
    domains = sorted(set(curated.labeled) | set(curated.unlabeled))
    for d in domains:  # logged heads name files: refused before anything is written
        check_path_name(d, "logged domain (head) name", error=DomainError)
    labeled = {d: [(e.text, e.label) for e in curated.labeled.get(d, [])] for d in domains}
    unlabeled = {d: list(curated.unlabeled.get(d, [])) for d in domains}
    names = {d: curated.label_names.get(d) or sorted({label for _, label in labeled[d]}) for d in domains}
    fingerprint = _fingerprint(labeled, unlabeled, names)
    root = Path(config.out) if config.out else (registry.home / "datasets" if registry.home else None)
    if root is None:
        raise RegistryError("this registry has no home directory: set out=DIR for the collected files")
    directory = safe_child(
        root, config.name, fingerprint[:12], what="dataset name", nested=True, error=ConfigError
    )
    counts = {
        d: {
            **{t: 0 for t in ("human", "pseudo", "hard")},
            **Counter(e.tier for e in curated.labeled.get(d, [])),
            "unlabeled": len(unlabeled[d]),
        }
        for d in domains
    }
    counts_all = {"domains": counts, "skipped_hash_only": curated.skipped_hash_only}
    if not (directory / MANIFEST).is_file():
        with atomic_directory(directory, overwrite=directory.exists()) as tmp:
            for d in domains:
                rows = [
                    {"text": e.text, "label": e.label, "tier": e.tier, "prediction_id": e.prediction_id}
                    for e in curated.labeled.get(d, [])
                ]
                _write_jsonl(tmp / f"{d}.jsonl", rows)
                _write_jsonl(tmp / f"{d}.unlabeled.jsonl", [{"text": t} for t in unlabeled[d]])
            atomic_write_json(
                tmp / MANIFEST,
                {
                    "name": config.name,
                    "fingerprint": fingerprint,
                    "kind": KIND,
                    "label_names": names,
                    "counts": counts_all,
                    "config": config.model_dump(mode="json"),
                },
            )
    record = registry.register_dataset(
        name=config.name,
        fingerprint=fingerprint,
        n_rows=sum(len(v) for v in labeled.values()),
        domain=domains[0] if len(domains) == 1 else None,
        split="train",
        source=str(directory),
        metadata={"kind": KIND, "domains": domains, "label_names": names, "counts": counts_all},
    )
    return record, counts_all


def _domain_files(directory: Path, domain: str) -> tuple[Path, Path]:
    """A domain's labelled and unlabeled JSONL files in a collected dataset's directory."""
    check_path_name(domain, "collected domain name", error=DomainError)
    return directory / f"{domain}.jsonl", directory / f"{domain}.unlabeled.jsonl"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


@dataclass(frozen=True)
class CollectedData:
    """A collected dataset read back: labelled (texts, label ids) and unlabeled texts per domain."""

    record: DatasetRecord
    labeled: dict[str, tuple[list[str], list[int]]]
    unlabeled: dict[str, list[str]]
    label_names: dict[str, list[str]]


def find_collected(registry: Registry, dataset: str) -> DatasetRecord:
    """The dataset ``dataset`` names: an id (``name@fingerprint``) or a name (its newest version)."""
    if "@" in dataset:
        record = registry.get_dataset(dataset)
    else:
        matches = [d for d in registry.list_datasets() if d.name == dataset]
        if not matches:
            raise RegistryError(f"no dataset named {dataset!r}: run `fanbu collect name={dataset}` first")
        record = matches[-1]
    if record.metadata.get("kind") != KIND or not record.source:
        raise RegistryError(f"dataset {record.id} was not made by `fanbu collect`; name a collected dataset")
    return record


def read_collected(registry: Registry, dataset: str) -> CollectedData:
    """Read a collected dataset, checking its files still match the registered fingerprint."""
    record = find_collected(registry, dataset)
    directory = Path(str(record.source))
    names: dict[str, list[str]] = record.metadata["label_names"]
    raw: dict[str, list[tuple[str, str]]] = {}
    unlabeled: dict[str, list[str]] = {}
    for domain in record.metadata["domains"]:
        labeled_path, unlabeled_path = _domain_files(directory, domain)
        for path in (labeled_path, unlabeled_path):
            if not path.is_file():
                raise DomainError(
                    f"{path}: missing; run `fanbu collect` again to rewrite dataset {record.id}"
                )
        raw[domain] = [(r.text, str(r.label)) for r in read_table(labeled_path, fmt="jsonl").records]
        unlabeled[domain] = [
            r.text for r in read_table(unlabeled_path, fmt="jsonl", label_field=None).records
        ]
    if _fingerprint(raw, unlabeled, names) != record.fingerprint:
        raise DomainError(
            f"{directory}: files changed since dataset {record.id} was registered; run `fanbu collect` again"
        )
    labeled = {}
    for domain, rows in raw.items():
        index = {name: i for i, name in enumerate(names[domain])}
        bad = sorted({label for _, label in rows if label not in index})
        if bad:
            raise DomainError(f"{directory / domain}.jsonl: labels {bad} are not among {names[domain]}")
        labeled[domain] = ([t for t, _ in rows], [index[label] for _, label in rows])
    return CollectedData(record, labeled, unlabeled, names)


def load_collected(registry: Registry, dataset: str) -> dict[str, tuple[list[str], list[int]]]:
    """Domain -> (texts, label ids) of a collected dataset (ids index its ``label_names[domain]``).

    Args:
        registry: The registry the dataset was registered in.
        dataset: A dataset id (``collected@3f2a...``) or name (the newest version of that name).
    """
    return read_collected(registry, dataset).labeled


def collected_sources(registry: Registry, dataset: str) -> list[DomainSource]:
    """The dataset as ``fanbu.data`` domain sources (validation and test are carved from it)."""
    record = find_collected(registry, dataset)
    directory = Path(str(record.source))
    sources = []
    for domain in record.metadata["domains"]:
        train, extra = _domain_files(directory, domain)
        has_unlabeled = extra.is_file() and extra.stat().st_size > 0
        sources.append(
            DomainSource(
                name=domain,
                train=str(train),
                unlabeled=str(extra) if has_unlabeled else None,
                label_names=record.metadata["label_names"][domain],
            )
        )
    return sources
