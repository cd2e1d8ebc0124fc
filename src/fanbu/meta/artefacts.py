"""Saving and loading what meta-learning makes, with provenance, never through pickle.

* The meta-initialised top network is a module model (kind ``module``, :class:`~fanbu.models.module.ModuleHandle`):
  ``model.safetensors`` + ``module.json`` (factory :class:`~fanbu.meta.network.MetaBody` and its
  config) + ``fanbu.json`` with its provenance: the meta recipe, the meta-training domains' data
  fingerprints and the frozen encoder it sits on (``base_model``, relation ``adapter``).
* A meta decision forest is arrays in ``forest.safetensors`` and its settings, label names, provenance
  and the file's sha256 in ``forest.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

import fanbu
from fanbu.errors import ModelError
from fanbu.io import atomic_write_json, sha256_file, verify_sha256
from fanbu.meta.forest import MetaForest, MetaForestConfig
from fanbu.meta.learn import MetaResult
from fanbu.meta.network import MetaBody
from fanbu.models.artefact import Provenance, model_directory, read_json
from fanbu.models.module import ModuleHandle

BODY_FACTORY = "fanbu.meta.network:MetaBody"
META_KEY = "meta"  # where the encoder and feature facts sit in a provenance's ``extra``
FOREST_JSON = "forest.json"
FOREST_WEIGHTS = "forest.safetensors"
FOREST_FORMAT = 1


def meta_provenance(result: MetaResult, encoder: str, features: dict[str, Any],
                    data_fingerprints: dict[str, str]) -> Provenance:
    """Provenance of a meta-initialised body on ``encoder``'s pooled features (``features``: how they were made)."""
    return Provenance(recipe=result.config.model_dump(mode="json"), data_fingerprints=dict(data_fingerprints),
                      base_model=encoder, base_model_relation="adapter", name=f"meta-{result.config.method}",
                      extra={META_KEY: {"encoder": encoder, "features": dict(features),
                                        "meta_domains": list(result.domains),
                                        "head": "re-initialised at zero per task"}})


def save_meta_init(body: MetaBody, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
    """Save the meta-initialised body as a module model (safetensors + provenance)."""
    config = {"in_dim": body.in_dim, "hidden": body.hidden, **({"learned_lr": True} if body.learned_lr else {})}
    handle = ModuleHandle(body, config, BODY_FACTORY)
    return handle.save(path, provenance, overwrite=overwrite)


def load_meta_init(path: str | Path) -> tuple[MetaBody, Provenance]:
    """The body saved by :func:`save_meta_init` and its provenance."""
    handle = ModuleHandle.load(path)
    if not isinstance(handle.module, MetaBody):
        raise ModelError(f"{path}: holds a {type(handle.module).__name__}, not a meta-initialised MetaBody; "
                         "load it with fanbu.models.load_handle")
    return handle.module, handle.provenance or Provenance()


def save_forest(forest: MetaForest, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
    """Save ``forest``: arrays as safetensors, settings, labels and provenance as JSON."""
    arrays = {"feature": forest.feature, "threshold": forest.threshold}
    if forest.node_proba is not None:
        arrays["node_proba"] = forest.node_proba.astype(np.float32)
    if forest.projection is not None:
        arrays["projection"] = forest.projection
    with model_directory(path, overwrite) as tmp:
        save_file(arrays, str(tmp / FOREST_WEIGHTS))
        atomic_write_json(tmp / FOREST_JSON, {
            "format": FOREST_FORMAT, "kind": "meta_forest", "fanbu_version": fanbu.__version__,
            "config": forest.config.model_dump(mode="json"), "meta_domains": forest.meta_domains,
            "label_names": forest.label_names, "provenance": provenance.to_dict(),
            "weights": {FOREST_WEIGHTS: sha256_file(tmp / FOREST_WEIGHTS)},
        })
    return Path(path)


def load_forest(path: str | Path) -> tuple[MetaForest, Provenance]:
    """The forest saved by :func:`save_forest` (its weights' sha256 checked) and its provenance."""
    directory = Path(path)
    remedy = "re-save the forest"
    record = read_json(directory / FOREST_JSON, remedy)
    if not isinstance(record, dict) or record.get("kind") != "meta_forest" or record.get("format") != FOREST_FORMAT:
        raise ModelError(f"{directory / FOREST_JSON}: not a meta forest of format {FOREST_FORMAT}; {remedy}")
    expected = (record.get("weights") or {}).get(FOREST_WEIGHTS)
    if not isinstance(expected, str):
        raise ModelError(f"{directory / FOREST_JSON}: records no sha256 of {FOREST_WEIGHTS}; {remedy}")
    verify_sha256(directory / FOREST_WEIGHTS, expected, str(directory / FOREST_JSON), remedy)
    try:
        arrays = load_file(str(directory / FOREST_WEIGHTS))
        config = MetaForestConfig.model_validate(record["config"])
        provenance = Provenance(**record["provenance"])
        forest = MetaForest(config, arrays["feature"], arrays["threshold"], record.get("meta_domains") or [],
                            arrays.get("node_proba"), record.get("label_names"), arrays.get("projection"))
    except (SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{directory}: cannot rebuild the forest ({exc}); {remedy}") from None
    return forest, provenance
