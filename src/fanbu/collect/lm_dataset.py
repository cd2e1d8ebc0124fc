"""Collected LM datasets on disk and back: one JSONL of prompt-completion pairs, a manifest, a fingerprint.

A collected LM dataset is a directory ``<home>/datasets/<name>/<fingerprint[:12]>/`` holding
``generations.jsonl`` (``prompt``, ``completion``, ``text`` = prompt + completion, ``tier``,
``generation_id``, ``target``, ``endpoint``) and ``manifest.json``. The fingerprint is the sha256 of
the pairs and their tiers, so the same curation gives the same dataset id. Its registry record names
its parent, the serving log (the database, the models whose generations it holds); a causal-LM domain
reads it through :func:`collected_lm_source` (``text`` field), and training on corrections reads the
pairs with :func:`read_collected_lm`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from fanbu.collect.lm_curated import LM_TIERS, LMCurateConfig, LMExample
from fanbu.data.loaders import DomainSource
from fanbu.errors import ConfigError, DomainError, RegistryError
from fanbu.io import atomic_directory, atomic_write_json, safe_child, sha256_json
from fanbu.registry import DatasetRecord, Registry
from fanbu.registry.engine import describe_url

LM_KIND = "collected_lm"
FILE = "generations.jsonl"
MANIFEST = "manifest.json"


def _fingerprint(pairs: list[tuple[str, str, str]]) -> str:
    return sha256_json({"kind": LM_KIND, "pairs": pairs})


def write_collected_lm(
    registry: Registry,
    config: LMCurateConfig,
    examples: list[LMExample],
    dropped: Counter[str],
    models: list[str],
    logged: int,
) -> tuple[DatasetRecord, dict[str, Any]]:
    """Write ``examples`` (unless that content exists already) and register them; returns record and counts."""
    fingerprint = _fingerprint([(e.prompt, e.completion, e.tier) for e in examples])
    root = Path(config.out) if config.out else (registry.home / "datasets" if registry.home else None)
    if root is None:
        raise RegistryError("this registry has no home directory: set out=DIR for the collected files")
    directory = safe_child(
        root, config.name, fingerprint[:12], what="dataset name", nested=True, error=ConfigError
    )
    tiers = Counter(e.tier for e in examples)
    counts = {
        "logged": logged,
        "kept": len(examples),
        "tiers": {t: tiers.get(t, 0) for t in LM_TIERS},
        "dropped": dict(sorted(dropped.items())),
    }
    parent = {"log": describe_url(registry.url), "models": models}
    if not (directory / MANIFEST).is_file():
        with atomic_directory(directory, overwrite=directory.exists()) as tmp:
            with open(tmp / FILE, "w", encoding="utf-8") as handle:
                for e in examples:
                    row = {
                        "prompt": e.prompt,
                        "completion": e.completion,
                        "text": e.text,
                        "tier": e.tier,
                        "generation_id": e.generation_id,
                        "target": e.target,
                        "endpoint": e.endpoint,
                    }
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            manifest = {"name": config.name, "fingerprint": fingerprint, "kind": LM_KIND, "parent": parent}
            atomic_write_json(
                tmp / MANIFEST, {**manifest, "counts": counts, "config": config.model_dump(mode="json")}
            )
    record = registry.register_dataset(
        name=config.name,
        fingerprint=fingerprint,
        n_rows=len(examples),
        split="train",
        source=str(directory),
        metadata={"kind": LM_KIND, "task": "causal_lm", "parent": parent, "counts": counts},
    )
    return record, counts


def find_collected_lm(registry: Registry, dataset: str) -> DatasetRecord:
    """The LM dataset ``dataset`` names: an id (``name@fingerprint``) or a name (its newest version)."""
    if "@" in dataset:
        record = registry.get_dataset(dataset)
    else:
        matches = [d for d in registry.list_datasets() if d.name == dataset]
        if not matches:
            raise RegistryError(
                f"no dataset named {dataset!r}: run `fanbu collect --lm name={dataset}` first"
            )
        record = matches[-1]
    if record.metadata.get("kind") != LM_KIND or not record.source:
        raise RegistryError(f"dataset {record.id} is not an LM dataset made by `fanbu collect --lm`")
    return record


def read_collected_lm(registry: Registry, dataset: str) -> list[LMExample]:
    """The prompt-completion pairs of a collected LM dataset, checked against its registered fingerprint."""
    record = find_collected_lm(registry, dataset)
    path = Path(str(record.source)) / FILE
    if not path.is_file():
        raise DomainError(f"{path}: missing; run `fanbu collect --lm` again to rewrite dataset {record.id}")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    examples = [
        LMExample(r["prompt"], r["completion"], r["tier"], r["generation_id"], r["target"], r["endpoint"])
        for r in rows
    ]
    if _fingerprint([(e.prompt, e.completion, e.tier) for e in examples]) != record.fingerprint:
        raise DomainError(
            f"{path}: changed since dataset {record.id} was registered; run `fanbu collect --lm` again"
        )
    return examples


def collected_lm_source(registry: Registry, dataset: str, domain: str | None = None) -> DomainSource:
    """The dataset as a ``causal_lm`` domain source over its ``text`` field (validation carved from it)."""
    record = find_collected_lm(registry, dataset)
    return DomainSource(
        name=domain or record.name, task="causal_lm", train=str(Path(str(record.source)) / FILE)
    )
