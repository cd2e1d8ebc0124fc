"""One stage's output saved with its provenance and registered: the step every derive path shares.

The encoder path (:mod:`fanbu.derive.pipeline`) and the causal-LM path (:mod:`fanbu.derive.lm.pipeline`)
run their own stage registries, but each stage's result is recorded the same way: a work directory
under the run, the provenance (stage settings, the derive recipe, the parent, data fingerprints, the
Hugging Face relation), then ``Workspace.save_and_register`` with the parameter count and seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from fanbu.evaluate.speed import param_count
from fanbu.io import safe_child
from fanbu.models.artefact import Provenance
from fanbu.registry import ModelRecord
from fanbu.registry.workspace import Workspace
from fanbu.synthetic import with_synthetic_share


class StageResult(Protocol):
    """What a stage of either path returns (``StageOutput``, ``LMStageOutput``)."""

    handle: Any
    relation: str
    hf_relation: str | None
    metrics: Any
    save: Any


def stage_dir(home: str | Path, run_id: str, domain: str, index: int, name: str) -> Path:
    """The stage's scratch directory: ``HOME/runs/<run>/<domain>/<index>-<stage>``."""
    return safe_child(Path(home) / "runs", run_id, domain, f"{index}-{name}", what="domain name")


def record_stage(
    workspace: Workspace,
    out: StageResult,
    *,
    stage: str,
    config: BaseModel,
    derive_recipe: Mapping[str, Any],
    domain: str,
    parent: str,
    fingerprints: Mapping[str, str],
    started: float,
    synthetic: Mapping[str, Any] | None = None,
) -> ModelRecord:
    """Save ``out.handle`` as ``<domain>.<stage>`` with its provenance and register it under ``parent``.

    ``synthetic``: how much of the training set was generated (dataset, rows, share), for the model card.
    """
    provenance = Provenance(
        recipe={"stage": stage, "settings": config.model_dump(mode="json"), "derive": dict(derive_recipe)},
        parents=[parent],
        data_fingerprints=dict(fingerprints),
        base_model=parent,
        base_model_relation=out.hf_relation,
        metrics=out.metrics,
    )
    if synthetic is not None:
        provenance = with_synthetic_share(
            provenance, synthetic["dataset"], synthetic["real_rows"], synthetic["synthetic_rows"]
        )
    return workspace.save_and_register(
        out.handle,
        provenance,
        name=f"{domain}.{stage}",
        relation=out.relation,
        save=out.save,
        metadata={"params": param_count(out.handle.model), "seconds": time.perf_counter() - started},
    )


def finish_domain(
    registry: Any,
    final: str,
    handle: Any,
    domain: str,
    test: dict[str, float],
    test_fingerprint: str,
    run_id: str,
    made: list[str],
) -> dict[str, Any]:
    """Record the last stage's ``test`` scores (once, for the report) and return the domain's summary."""
    registry.record_evaluation(
        final, domain=domain, split="test", metrics=test, dataset_fingerprint=test_fingerprint, run_id=run_id
    )
    return {"domain": domain, "models": made, "final": final, "test": test, "params": param_count(handle.model)}
