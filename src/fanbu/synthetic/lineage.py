"""Synthetic data as a registered dataset with lineage, and a model's record of how much of its training
set was synthetic.

A synthetic set is a directory ``<home>/datasets/<name>/<fingerprint[:12]>/`` with ``synthetic.jsonl``
(texts: ``text``, ``label``, ``prompt``) or ``synthetic.safetensors`` (features and labels), plus
``manifest.json``; the registry's dataset record carries the lineage (generator, prompts, filter, seed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fanbu.errors import RegistryError
from fanbu.io import atomic_directory, atomic_write_json, safe_child, sha256_json
from fanbu.models.artefact import Provenance
from fanbu.registry import DatasetRecord, Registry
from fanbu.synthetic.text import Generated

KIND = "synthetic"
MANIFEST = "manifest.json"


@dataclass
class SyntheticSet:
    """Generated rows (texts with labels, or feature rows with labels) and where they came from.

    ``lineage``: ``generator`` (source or description), ``prompts`` (template and count, or ``None`` for
    features), ``filter`` (settings and counts), ``seed``, and anything else worth keeping.
    """

    name: str
    domain: str
    label_names: list[str]
    lineage: dict[str, Any]
    texts: list[Generated] = field(default_factory=list)
    features: torch.Tensor | None = None  # (n, width)
    labels: torch.Tensor | None = None  # (n,)

    @property
    def rows(self) -> int:
        """How many synthetic rows."""
        return len(self.texts) if self.features is None else int(self.features.shape[0])

    def fingerprint(self) -> str:
        """sha256 of the rows and the lineage: the same generation gives the same dataset id."""
        content: dict[str, Any] = {"lineage": self.lineage, "labels": self.label_names, "domain": self.domain}
        if self.features is None:
            content["texts"] = [[g.text, g.label, g.prompt] for g in self.texts]
        else:
            content["features"] = self.features.float().numpy().round(6).tolist()
            content["feature_labels"] = self.labels.tolist() if self.labels is not None else None
        return sha256_json(content)


def _write(directory: Path, synthetic: SyntheticSet, fingerprint: str) -> None:
    with atomic_directory(directory, overwrite=directory.exists()) as tmp:
        if synthetic.features is None:
            with open(tmp / "synthetic.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"text": g.text, "label": g.label, "prompt": g.prompt},
                                             ensure_ascii=False) + "\n" for g in synthetic.texts)
        else:
            labels = synthetic.labels if synthetic.labels is not None else torch.zeros(0, dtype=torch.long)
            save_file({"features": synthetic.features.contiguous().float(), "labels": labels.contiguous().long()},
                      str(tmp / "synthetic.safetensors"))
        atomic_write_json(tmp / MANIFEST, {"name": synthetic.name, "fingerprint": fingerprint, "kind": KIND,
                                           "domain": synthetic.domain, "label_names": synthetic.label_names,
                                           "rows": synthetic.rows, "lineage": synthetic.lineage})


def register_synthetic(registry: Registry, synthetic: SyntheticSet, out: Path | None = None) -> DatasetRecord:
    """Write ``synthetic`` (unless that content exists already) and register it with its lineage.

    Raises:
        RegistryError: the lineage lacks generator, prompts, filter or seed, or there is nowhere to write.
    """
    missing = [k for k in ("generator", "prompts", "filter", "seed") if k not in synthetic.lineage]
    if missing:
        raise RegistryError(f"synthetic dataset {synthetic.name!r}: lineage lacks {missing}; record the generator, "
                            "prompts (None for features), filter (None when unfiltered) and seed")
    root = out or (registry.home / "datasets" if registry.home else None)
    if root is None:
        raise RegistryError("this registry has no home directory: give out=DIR for the synthetic files")
    fingerprint = synthetic.fingerprint()
    directory = safe_child(root, synthetic.name, fingerprint[:12], what="dataset name", nested=True,
                           error=RegistryError)
    if not (directory / MANIFEST).is_file():
        _write(directory, synthetic, fingerprint)
    return registry.register_dataset(
        name=synthetic.name, fingerprint=fingerprint, n_rows=synthetic.rows, domain=synthetic.domain,
        split="train", source=str(directory),
        metadata={"kind": KIND, "label_names": synthetic.label_names, "lineage": synthetic.lineage},
    )


def with_synthetic_share(provenance: Provenance, dataset: DatasetRecord | str | Sequence[str], real_rows: int,
                         synthetic_rows: int) -> Provenance:
    """``provenance`` that also records, in its data fingerprints (and so the model card), how much of the
    training set was synthetic and which dataset (or datasets, comma-separated) it came from."""
    total = real_rows + synthetic_rows
    if isinstance(dataset, DatasetRecord):
        dataset_id = dataset.id
    else:
        dataset_id = dataset if isinstance(dataset, str) else ",".join(dataset)
    record = {"dataset": dataset_id, "synthetic_rows": synthetic_rows, "real_rows": real_rows,
              "synthetic_share": synthetic_rows / total if total else 0.0}
    return replace(provenance, data_fingerprints={**provenance.data_fingerprints, "synthetic": record})
