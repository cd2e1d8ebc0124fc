"""``fanbu derive RECIPE.yaml``: run the recipe's stages for every domain, in parallel, into the registry.

For each domain: load the teacher (a registered large model or any model source) with only that
domain's head, run the stages in order, save and register each stage's output with the previous one
as its parent, and score the final model on the domain's test split. Domains are independent jobs run
through an executor (local processes, or a Ray cluster when the recipe names one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn

from fanbu.config import Strict, write_resolved
from fanbu.derive.data import DeriveData, domain_names, load_domain_data
from fanbu.derive.stages import STAGES, StageContext, parse_stages
from fanbu.errors import ConfigError, FanbuError
from fanbu.evaluate.metrics import classification_metrics
from fanbu.evaluate.speed import param_count
from fanbu.execute import ExecutorConfig, make_executor
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.models.tokenize import Truncation
from fanbu.registry import Registry

DEFAULT_STAGES: list[Any] = [
    {"finetune": {}},
    {"prune": {"layers": 2, "heads": 8, "hidden": 256, "ffn": 0.5, "vocab": 8000, "importance": "taylor"}},
    {"distill": {}},
    {"quantize": {}},
]


class DeriveRecipe(Strict):
    """What ``fanbu derive`` runs."""

    teacher: str = Field(
        "large",
        description="A registered model (an id like large:v0, or a name: its champion) or a source "
        "(package:NAME, a directory, a hub id).",
    )
    max_length: int = Field(128, ge=8, description="Tokens per text for teacher and students.")
    truncation: Literal["head", "head_tail"] = Field(
        "head", description="Which tokens of a long text to keep: its head, or its head and its tail (half each)."
    )
    data: DeriveData = Field(default_factory=DeriveData)
    stages: list[Any] = Field(
        default_factory=lambda: list(DEFAULT_STAGES), description="[{stage: {settings}}, ...]"
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @model_validator(mode="after")
    def _stages_valid(self) -> DeriveRecipe:
        try:
            parse_stages(self.stages)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


@dataclass(frozen=True)
class DomainJob:
    """One domain's derivation, self-contained so that it can run in another process or on Ray."""

    recipe: dict[str, Any]
    domain: str
    home: str
    db_url: str
    run_id: str


def keep_head(handle: EncoderHandle, name: str, label_names: tuple[str, ...]) -> EncoderHandle:
    """Restrict ``handle`` to the head ``name`` (added fresh when missing or when its labels differ)."""
    kept = (
        handle.model.heads[name]
        if name in handle.labels and handle.labels[name] == list(label_names)
        else None
    )
    handle.model.heads = nn.ModuleDict()
    handle.labels = {}
    if kept is None:
        handle.add_head(name, label_names)
    else:
        handle.model.heads[name] = kept
        handle.labels[name] = list(label_names)
    return handle


def load_teacher(
    spec: str, registry: Registry, max_length: int, truncation: Truncation = "head"
) -> tuple[EncoderHandle, str | None]:
    """Load the teacher from the registry (id or champion of a name) or from a model source."""
    record = None
    is_source = spec.startswith("package:") or "/" in spec or Path(spec).exists()
    if not is_source and ":" in spec:
        record = registry.get_model(spec)
    elif not is_source:
        record = registry.latest(spec, status="champion")
        if record is None:
            raise ConfigError(
                f"teacher {spec!r}: no champion of that name in the registry; run `fanbu demo` first, or set "
                "teacher to a model id (large:v0), package:all-MiniLM-L6-v2, a directory or a hub id"
            )
    if record is not None:
        handle = EncoderHandle.load(record.path)
        handle.max_length, handle.truncation = max_length, truncation
        return handle, record.id
    handle = EncoderHandle.from_source(spec, max_length=max_length)
    handle.truncation = truncation
    return handle, None


def register_source(registry: Registry, spec: str) -> str:
    """Register a model source (package, directory, hub id) as an archived root model, once; its id."""
    if spec.startswith("package:"):
        name = spec.removeprefix("package:")
    elif Path(spec).exists():
        name = Path(spec).resolve().name
    else:
        name = spec.replace("/", "--")
    existing = registry.latest(name)
    if existing is not None:
        return existing.id
    record = registry.register_model(
        name=name, path=spec, kind="encoder", status="archived", metadata={"source": spec, "role": "pretrained base"}
    )
    return record.id


def derive_domain(job: DomainJob) -> dict[str, Any]:
    """Run every stage for one domain; returns the ids of the models made and the final test scores."""
    recipe = DeriveRecipe.model_validate(job.recipe)
    registry = Registry(job.db_url, Path(job.home))
    try:
        data = load_domain_data(recipe.data, job.domain)
        handle, parent = load_teacher(recipe.teacher, registry, recipe.max_length, recipe.truncation)
        parent = parent or register_source(registry, recipe.teacher)
        handle = keep_head(handle, data.name, data.label_names)
        teacher: EncoderHandle | None = None
        made = []
        for index, (name, config) in enumerate(parse_stages(recipe.stages)):
            info = STAGES[name]
            if info.makes_student and teacher is None:
                teacher = handle
            work = Path(job.home) / "runs" / job.run_id / data.name / f"{index}-{name}"
            started = time.perf_counter()
            out = info.run(handle, StageContext(data, teacher, work, recipe.data.seed), config)
            model_name = f"{data.name}.{name}"
            version = registry.next_version(model_name)
            path = registry.model_dir(model_name, version)
            provenance = Provenance(
                recipe={"stage": name, "settings": config.model_dump(mode="json"), "derive": job.recipe},
                parents=[parent],
                data_fingerprints=data.fingerprints,
                base_model=parent,
                base_model_relation=out.hf_relation,
                name=f"{model_name}:v{version}",
                metrics=out.metrics,
            )
            (out.save or out.handle.save)(path, provenance)
            record = registry.register_model(
                name=model_name,
                version=version,
                path=path,
                kind="encoder",
                parents=[parent],
                relation=out.relation,
                recipe=provenance.recipe,
                fingerprints=data.fingerprints,
                metadata={"params": param_count(out.handle.model), "seconds": time.perf_counter() - started},
            )
            scores = _score(out.handle, data.name, data.validation)
            registry.record_evaluation(
                record.id,
                domain=data.name,
                split="validation",
                metrics=scores,
                dataset_fingerprint=data.fingerprints["validation"],
                run_id=job.run_id,
            )
            made.append(record.id)
            parent, handle = record.id, out.handle
        test = _score(handle, data.name, data.test)
        registry.record_evaluation(
            parent,
            domain=data.name,
            split="test",
            metrics=test,
            dataset_fingerprint=data.fingerprints["test"],
            run_id=job.run_id,
        )
        return {
            "domain": data.name,
            "models": made,
            "final": parent,
            "test": test,
            "params": param_count(handle.model),
        }
    finally:
        registry.close()


def _score(handle: EncoderHandle, head: str, pairs: tuple[list[str], list[int]]) -> dict[str, float]:
    texts, labels = pairs
    return classification_metrics(
        handle.predict(texts, head, batch_size=64), labels, len(handle.labels[head])
    )


def run_derive(recipe: DeriveRecipe, registry: Registry) -> list[dict[str, Any]]:
    """Derive for every domain of the recipe through its executor; the run is recorded in the registry."""
    if registry.home is None:
        raise FanbuError(
            "derive needs a registry with a home directory for its artefacts (Registry.open(home))"
        )
    names = domain_names(recipe.data)
    run = registry.start_run("derive", recipe.model_dump(mode="json"))
    write_resolved(recipe, registry.home / "runs" / run.id)
    jobs = [
        DomainJob(recipe.model_dump(mode="json"), n, str(registry.home), registry.url, run.id) for n in names
    ]
    try:
        results = make_executor(recipe.executor).map(derive_domain, jobs, names=names)
    except BaseException as exc:
        registry.finish_run(run.id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    registry.finish_run(run.id, "succeeded", {"domains": results})
    return results
