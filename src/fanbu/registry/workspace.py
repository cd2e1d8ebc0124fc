"""The one spine of an artefact's life: resolve a reference, load, save and register, run a job.

Every movement (derive, feed back, federate, cycle, serve, the demo, the benches) goes through a
:class:`Workspace` over the lineage registry:

- :meth:`Workspace.resolve` turns ``name`` (the latest version), ``name:vN`` / ``name:N`` (that
  version) or a registry id into a :class:`ModelRecord`; :meth:`Workspace.champion` does the same
  for the current champion of a name.
- :meth:`Workspace.load` loads what a reference names, of any kind, on any runtime
  (:func:`fanbu.models.load_handle`); :meth:`Workspace.load_spec` also takes a model *source*
  (``package:NAME``, a directory, a hub id) and registers it as an archived root model.
- :meth:`Workspace.save_and_register` saves a handle with its provenance, then registers it *from*
  the saved ``fanbu.json``, so the file and the registry cannot disagree on kind, parents, recipe or
  data fingerprints.
- ``with workspace.run(kind, recipe) as run:`` records a run; a failure inside the block is recorded
  once, here, and re-raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from fanbu.config import write_resolved
from fanbu.errors import ConfigError, FanbuError, RegistryError
from fanbu.models.artefact import Provenance, read_provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.models.loading import Handle, handle_kind, load_handle
from fanbu.models.predict import Predictor
from fanbu.registry.checks import check_choice
from fanbu.registry.records import MODEL_STATUSES, RELATIONS, ModelRecord
from fanbu.registry.store import Registry

_REF = re.compile(r"(?P<name>[^:\s]+)(?::v?(?P<version>\d+))?")
RELATION_KEY = "registry_relation"  # where the lineage relation is kept in a provenance's ``extra``


class UnknownModelError(RegistryError):
    """No registered model has this name (or version)."""


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` -> ``(name, None)``; ``"name:v3"`` or ``"name:3"`` -> ``(name, 3)``."""
    match = _REF.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise UnknownModelError(f"bad model reference {ref!r}: use name or name:vN (e.g. comp.quantize:v0)")
    version = match.group("version")
    return match.group("name"), None if version is None else int(version)


def is_source(spec: str) -> bool:
    """Whether ``spec`` names a model source (``package:NAME``, a path, a hub id), not a registry ref."""
    return spec.startswith("package:") or "/" in spec or Path(spec).exists()


@dataclass
class ActiveRun:
    """A run in progress: its id, its directory under the registry home, and the summary to record."""

    id: str
    dir: Path
    summary: dict[str, Any] = field(default_factory=dict)


def run_environment() -> dict[str, Any]:
    """What a run's numbers depend on besides its recipe and seed: torch's intra-op threads (float sums
    add up in another order on another count), torch's version, and whether its deterministic kernels
    are on (the training loop turns them on)."""
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Workspace:
    """Resolve, load, save-and-register and run, over one lineage registry with a home directory."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @classmethod
    def open(cls, home: str | Path, url: str | None = None) -> Workspace:
        """The workspace of the registry at ``home`` (``home/registry.db`` unless ``url``)."""
        return cls(Registry.open(home, url))

    @property
    def home(self) -> Path:
        """The registry's home directory, where artefacts and run directories live."""
        if self.registry.home is None:
            raise FanbuError(
                "this needs a registry with a home directory for its artefacts (Registry.open(home))"
            )
        return self.registry.home

    # --------------------------------------------------------------------------- references

    def resolve(self, ref: str | ModelRecord, status: str | None = None) -> ModelRecord:
        """The registered model ``ref`` names: a version, or the latest of a name (with ``status``).

        Raises:
            UnknownModelError: no such name or version, saying how to list what is registered.
        """
        if isinstance(ref, ModelRecord):
            return ref
        name, version = parse_ref(ref)
        if version is None:
            record = self.registry.latest(name, status=status)
            if record is None:
                which = f"{status} " if status else ""
                raise UnknownModelError(
                    f"unknown model {name!r}: no {which}registered model has this name (see `fanbu models`)"
                )
            return record
        try:
            return self.registry.get_model(f"{name}:v{version}")
        except RegistryError:
            raise UnknownModelError(
                f"unknown model {name}:v{version}: this version is not registered "
                f"(see `fanbu models --name {name}`)"
            ) from None

    def champion(self, ref: str) -> ModelRecord:
        """The champion ``ref`` names: a version that must be champion, or a name's current champion."""
        try:
            record = self.resolve(ref, status="champion")
        except UnknownModelError as exc:
            raise ConfigError(
                f"champion {ref!r}: {exc}; run `fanbu demo` first, or give the id of a champion"
            ) from None
        if record.status != "champion":
            raise ConfigError(
                f"champion {record.id} is {record.status!r}; name the current champion of {record.name}"
            )
        return record

    # ------------------------------------------------------------------------------ loading

    def load(self, ref: str | ModelRecord, runtime: str | None = None) -> Handle | Predictor:
        """Load the model ``ref`` names, of whatever kind it is, on ``runtime`` (``None``: its handle).

        A LoRA adapter is put back onto the model its provenance names as ``base_model``, loaded first.
        """
        record = self.resolve(ref)
        base = None
        if handle_kind(record.path) == "lora":
            provenance, _ = read_provenance(Path(record.path))
            if provenance.base_model is None:
                raise ConfigError(f"model {record.id} is a LoRA adapter with no base_model in its provenance")
            base = self.load_encoder(provenance.base_model)
        return load_handle(record.path, runtime=runtime, base=base)

    def load_encoder(self, ref: str | ModelRecord) -> EncoderHandle:
        """Load ``ref`` and check it is a classifier with named heads (an encoder, an MoE encoder)."""
        record = self.resolve(ref)
        handle = self.load(record)
        if not isinstance(handle, EncoderHandle):
            raise ConfigError(
                f"model {record.id} is a {handle_kind(record.path)!r} model; this step needs an encoder "
                "classifier (an encoder or MoE encoder with heads)"
            )
        return handle

    def load_spec(self, spec: str, max_length: int = 256) -> tuple[EncoderHandle, str]:
        """An encoder from a registry reference or a model source, and its registry id.

        A registry name means its champion. A source (``package:NAME``, a directory, a hub id) is
        loaded without heads and registered once as an archived root model.
        """
        if is_source(spec):
            handle = EncoderHandle.from_source(spec, max_length=max_length)
            return handle, self.register_source(spec)
        _, version = parse_ref(spec)
        if version is not None:
            return self.load_encoder(spec), self.resolve(spec).id
        try:
            record = self.resolve(spec, status="champion")
        except UnknownModelError:
            raise ConfigError(
                f"{spec!r}: no champion of that name in the registry; run `fanbu demo` first, or give a "
                "model id (large:v0), package:all-MiniLM-L6-v2, a directory or a hub id"
            ) from None
        return self.load_encoder(record), record.id

    def register_source(self, spec: str) -> str:
        """Register a model source (package, directory, hub id) as an archived root model, once; its id."""
        if spec.startswith("package:"):
            name = spec.removeprefix("package:")
        elif Path(spec).exists():
            name = Path(spec).resolve().name
        else:
            name = spec.replace("/", "--")
        existing = self.registry.latest(name)
        if existing is not None:
            return existing.id
        record = self.registry.register_model(
            name=name,
            path=spec,
            kind="encoder",
            status="archived",
            metadata={"source": spec, "role": "pretrained base"},
        )
        return record.id

    # ------------------------------------------------------------------- saving, registering

    def save_and_register(
        self,
        handle: Any,
        provenance: Provenance,
        *,
        name: str,
        relation: str | None = None,
        status: str = "candidate",
        metadata: dict[str, Any] | None = None,
        save: Callable[[Path, Provenance], Any] | None = None,
        datasets: list[str] | None = None,
    ) -> ModelRecord:
        """Save ``handle`` as the next version of ``name``, then register it from its ``fanbu.json``.

        Args:
            handle: What to save (its ``save(path, provenance)`` is called unless ``save`` is given).
            provenance: Recipe, parents, data fingerprints, base model; its ``name`` is set here.
            name: The model name; the version is the next free one.
            relation: The lineage edge to the parents (``derived``, ``distilled``, ``merged``, ...).
            status: The registry status (``candidate``, ``champion``, ``archived``, ...).
            metadata: Run facts that are not provenance (seconds, parameter count, strategy details).
            save: Another way to write the directory (a deployment, an adapter), same signature.
            datasets: Registered dataset ids the model trained on.
        """
        check_choice(status, MODEL_STATUSES, "model status")  # refused before anything is written
        if relation is not None:
            check_choice(relation, RELATIONS, "relation")
        version = self.registry.next_version(name)
        path = self.registry.model_dir(name, version)
        extra = dict(provenance.extra)
        if relation is not None:
            extra[RELATION_KEY] = relation
        provenance = dataclasses.replace(provenance, name=f"{name}:v{version}", extra=extra)
        (save or handle.save)(path, provenance)
        try:
            return self.register_saved(
                path, name=name, version=version, status=status, metadata=metadata, datasets=datasets
            )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # no directory the registry does not know
            raise

    def register_saved(
        self,
        path: str | Path,
        *,
        name: str,
        version: int | None = None,
        status: str = "candidate",
        metadata: dict[str, Any] | None = None,
        datasets: list[str] | None = None,
    ) -> ModelRecord:
        """Register the saved model directory ``path`` from its ``fanbu.json`` (kind, parents, recipe, data)."""
        provenance, _ = read_provenance(Path(path))
        return self.registry.register_model(
            name=name,
            version=version,
            path=path,
            kind=handle_kind(path),
            parents=provenance.parents,
            relation=provenance.extra.get(RELATION_KEY),
            recipe=provenance.recipe,
            fingerprints=provenance.data_fingerprints,
            datasets=datasets or [],
            status=status,
            metadata=_jsonable(metadata) if metadata is not None else None,
        )

    # ---------------------------------------------------------------------------------- runs

    @contextlib.contextmanager
    def run(self, kind: str, recipe: BaseModel | dict[str, Any]) -> Iterator[ActiveRun]:
        """Record a run of ``kind``: started now, ``succeeded`` with ``run.summary`` or ``failed``.

        A pydantic recipe is also written, resolved, into the run's directory. Either summary also
        gets ``environment`` (:func:`run_environment`, read when the run ends) unless the block set one.
        """
        dumped = recipe.model_dump(mode="json") if isinstance(recipe, BaseModel) else dict(recipe)
        home = self.home  # no run is recorded without a home for its artefacts
        record = self.registry.start_run(kind, dumped)
        active = ActiveRun(record.id, home / "runs" / record.id)
        if isinstance(recipe, BaseModel):
            write_resolved(recipe, active.dir)
        try:
            yield active
        except BaseException as exc:
            failure = {"error": f"{type(exc).__name__}: {exc}", "environment": run_environment()}
            self.registry.finish_run(record.id, "failed", failure)
            raise
        summary = {**active.summary, "environment": active.summary.get("environment", run_environment())}
        self.registry.finish_run(record.id, "succeeded", _jsonable(summary))
