"""The registry side of a federated run: where its models come from and how its results are recorded.

The champion is the registry's current champion (or a named id); FedMKT's clients start from a
registered student per domain, or from students derived now from the champion with the derive
pipeline. The new large version is registered as the next version of the champion's name (relation
``federated``, parents: the champion and the clients' starting models) and each client's new model
as ``<client>.federated`` (parents: its starting model and the new large version). References resolve,
models load and results are saved and registered through the :class:`~fanbu.registry.workspace.Workspace`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanbu.derive.data import DeriveData
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.errors import ConfigError
from fanbu.federated.data import ServerData, check_labels, server_data
from fanbu.federated.recipe import FederatedRecipe
from fanbu.federated.result import FederatedResult
from fanbu.federated.settings import RunSettings
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import ModelRecord
from fanbu.registry.workspace import UnknownModelError, Workspace


@dataclass
class Prepared:
    """A registry run's inputs: the champion, the server's data, the clients' starting models, settings."""

    champion: EncoderHandle
    record: ModelRecord
    data: ServerData
    starts: dict[str, ModelRecord]
    settings: RunSettings


def load_champion(
    workspace: Workspace, champion: str | ModelRecord, max_length: int | None
) -> tuple[EncoderHandle, ModelRecord]:
    """The champion handle and record (``champion``: an id, or a name whose champion is taken)."""
    record = champion if isinstance(champion, ModelRecord) else workspace.champion(champion)
    handle = workspace.load_encoder(record)
    if max_length is not None:
        handle.max_length = max_length
    return handle, record


def client_start_models(
    recipe: FederatedRecipe, workspace: Workspace, champion: ModelRecord, domains: list[str], max_length: int
) -> dict[str, ModelRecord]:
    """FedMKT: each domain's starting small model, from the registry or derived now from the champion."""
    spec = recipe.clients
    if spec.source == "registry":
        unknown, missing = sorted(set(spec.models) - set(domains)), sorted(set(domains) - set(spec.models))
        if unknown or missing:
            raise ConfigError(f"clients.models: no model for {missing}, not a federated domain: {unknown}")
        records = {}
        for domain, name in sorted(spec.models.items()):
            try:
                records[domain] = workspace.resolve(name)
            except UnknownModelError as exc:
                raise ConfigError(f"clients.models.{domain}: {exc}") from None
        return records
    derive = DeriveRecipe(
        teacher=champion.id,
        max_length=max_length,
        data=DeriveData.of(recipe.data, domains, spec.max_train),
        stages=spec.stages,
    )
    rows = run_derive(derive, workspace.registry)
    return {row["domain"]: workspace.resolve(row["final"]) for row in rows}


def register_large(
    workspace: Workspace,
    champion: ModelRecord,
    parents: list[str],
    recipe: FederatedRecipe,
    result: FederatedResult,
    fingerprints: dict[str, str],
) -> ModelRecord:
    """Save and register the run's large model as the champion name's next version, ``candidate``."""
    provenance = Provenance(
        recipe={"federated": recipe.model_dump(mode="json")},
        parents=parents,
        data_fingerprints=fingerprints,
        base_model=champion.id,
        base_model_relation="finetune",
        metrics=result.rounds[-1] if result.rounds else {},
    )
    return workspace.save_and_register(
        result.large,
        provenance,
        name=champion.name,
        relation="federated",
        status="candidate",
        metadata={
            "algorithm": recipe.algorithm,
            "rounds": result.rounds,
            "privacy": result.privacy,
            "seconds": result.seconds,
        },
    )


def register_clients(
    workspace: Workspace, result: FederatedResult, starts: Mapping[str, str], large_id: str, run_id: str
) -> dict[str, dict[str, Any]]:
    """Register each client's final model as ``<client>.federated``; client id -> its record id and metrics."""
    rows = {}
    for client_id, handle in sorted(result.clients.items()):
        metrics = result.client_metrics.get(client_id, {})
        domain = str(metrics.get("domain", client_id.rsplit("-", 1)[0]))
        provenance = Provenance(
            recipe={"client": client_id},
            parents=[starts[domain], large_id],
            base_model=starts[domain],
            base_model_relation="finetune",
            metrics=metrics,
        )
        record = workspace.save_and_register(
            handle,
            provenance,
            name=f"{client_id}.federated",
            relation="federated",
            metadata={"client": client_id, **metrics},
        )
        if "acc-after" in metrics:
            workspace.registry.record_evaluation(
                record.id,
                domain=domain,
                split="validation",
                metrics={"accuracy": float(metrics["acc-after"])},
                run_id=run_id,
            )
        rows[client_id] = {"model": record.id, **metrics}
    return rows


def prepare(recipe: FederatedRecipe, workspace: Workspace, work_dir: Path) -> Prepared:
    """Load the champion, check it against the data, find or derive the clients' starting models.

    Raises:
        ConfigError: the champion lacks a domain's head, the gate could not score a head, or a robust
            rule has too few clients.
    """
    champion, record = load_champion(workspace, recipe.champion, recipe.max_length)
    check_labels(recipe, champion.labels, f"champion {record.id}")
    data = server_data(recipe, heads=sorted(champion.labels))
    untested = sorted(set(champion.labels) - set(data.tests))
    if untested and recipe.gate.require_all_heads:
        raise ConfigError(
            f"the champion's heads {untested} have no test data, so the gate cannot score them; "
            "add them under data.heldout_files, or set gate.require_all_heads: false"
        )
    recipe.check_clients(len(data.domains))
    starts: dict[str, ModelRecord] = {}
    if recipe.algorithm == "fedmkt":
        starts = client_start_models(recipe, workspace, record, data.domains, champion.max_length)
    settings = RunSettings(recipe, work_dir, Path(record.path), {d: Path(r.path) for d, r in starts.items()})
    return Prepared(champion, record, data, starts, settings)
