"""Policies in the lineage registry: saved through the module spine with provenance, registered with parents.

A policy's provenance names its environment and the variants it learned from (their fingerprints are
its data fingerprints: a variant is its environment id and physics parameters), the recipe that made
it, and its parents (the experts of a distilled or merged policy). The registry entry is made from the
saved ``fanbu.json`` by :meth:`~fanbu.registry.workspace.Workspace.save_and_register`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fanbu.models.artefact import Provenance
from fanbu.registry import ModelRecord
from fanbu.registry.workspace import Workspace
from fanbu.rl.policy import PolicyMLP, as_policy, policy_handle
from fanbu.rl.variants import Variant

RL_KEY = "rl"  # where the environment facts sit in a provenance's ``extra``


def policy_provenance(policy: PolicyMLP, variants: Sequence[Variant], recipe: Mapping[str, Any], *,
                      parents: Sequence[str] = (), metrics: Mapping[str, Any] | None = None,
                      base_model: str | None = None, base_model_relation: str | None = None) -> Provenance:
    """Provenance of a policy trained on ``variants``."""
    env_ids = sorted({v.env_id for v in variants})
    return Provenance(
        recipe=dict(recipe),
        parents=list(parents),
        data_fingerprints={v.name: v.fingerprint for v in variants},
        base_model=base_model,
        base_model_relation=base_model_relation,
        metrics=dict(metrics or {}),
        extra={RL_KEY: {"env_ids": env_ids, "variants": [v.name for v in variants],
                        "params": {v.name: dict(v.params) for v in variants},
                        "obs_dim": policy.obs_dim, "n_actions": policy.n_actions}},
    )


def register_policy(workspace: Workspace, policy: PolicyMLP, provenance: Provenance, *, name: str,
                    relation: str | None = None, status: str = "candidate",
                    metadata: Mapping[str, Any] | None = None) -> ModelRecord:
    """Save ``policy`` as the next version of ``name`` and register it (kind ``module``)."""
    return workspace.save_and_register(policy_handle(policy), provenance, name=name, relation=relation,
                                       status=status, metadata=dict(metadata or {}))


def load_registered_policy(workspace: Workspace, ref: str | ModelRecord) -> PolicyMLP:
    """The policy a registry reference names (``name``, ``name:vN`` or an id)."""
    record = workspace.resolve(ref)
    return as_policy(workspace.load(record), f"model {record.id}")
