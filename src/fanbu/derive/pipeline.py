"""``fanbu derive RECIPE.yaml``: run the recipe's stages for every domain, in parallel, into the registry.

For each domain: load the teacher (a registered large model or any model source) with only that
domain's head, run the stages in order, save and register each stage's output with the previous one
as its parent, and score the final model on the domain's test split. Domains are independent jobs run
through an executor (local processes, or a Ray cluster when the recipe names one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fanbu.config import Strict, apply_overrides, read_yaml, validate
from fanbu.data.slices import domain_names
from fanbu.derive.augment import augment_domain
from fanbu.derive.data import DeriveData, load_domain_data
from fanbu.derive.lm import LMDeriveRecipe, run_lm_derive_recipe
from fanbu.derive.presets import DERIVE_STAGES, copy_stages
from fanbu.derive.stage_record import finish_domain, record_stage, stage_dir
from fanbu.derive.stages import STAGES, StageContext, parse_stages
from fanbu.errors import ConfigError
from fanbu.evaluate.metrics import classification_metrics
from fanbu.execute import ExecutorConfig, make_executor
from fanbu.io import check_path_name
from fanbu.models.encoder import EncoderHandle, keep_head
from fanbu.models.moe import MoEHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from fanbu.synthetic import AugmentConfig


class DeriveRecipe(Strict):
    """What ``fanbu derive`` runs for classification domains (``task: causal_lm``: :class:`LMDeriveRecipe`)."""

    task: Literal["classification"] = Field(
        "classification", description="classification (encoders); causal_lm recipes use LMDeriveRecipe."
    )
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
        default_factory=lambda: copy_stages(DERIVE_STAGES), description="[{stage: {settings}}, ...]"
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="Generative augmentation before the stages: kind lm adds label-conditioned texts from a "
        "causal LM, kept when the teacher agrees with their label, to every stage's training data "
        "(registered as a dataset; the share is in each model card); none: off.",
    )

    @model_validator(mode="before")
    @classmethod
    def _not_an_lm_recipe(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("task") == "causal_lm":
            raise ValueError(
                "task: causal_lm is an LM derive recipe (see recipes/lm-derive.yaml): load it with "
                "load_derive_recipe / LMDeriveRecipe, whose stages are finetune, prune, distill and export"
            )
        return data

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
    db_url: str = field(repr=False)  # may hold a password: kept out of reprs and error messages
    run_id: str


def derive_domain(job: DomainJob) -> dict[str, Any]:
    """Run every stage for one domain; returns the ids of the models made and the final test scores."""
    recipe = DeriveRecipe.model_validate(job.recipe)
    workspace = Workspace(Registry(job.db_url, Path(job.home)))
    registry = workspace.registry
    try:
        data = load_domain_data(recipe.data, job.domain)
        handle, parent = workspace.load_spec(recipe.teacher, recipe.max_length)
        handle.max_length, handle.truncation = recipe.max_length, recipe.truncation
        if recipe.augment.kind != "none":  # filtered by the loaded model's own head for the domain
            data, synthetic = augment_domain(recipe.augment, data, handle, registry)
        else:
            synthetic = None
        handle = keep_head(handle, data.name, data.label_names)
        teacher: EncoderHandle | None = None
        made = []
        for index, (name, config) in enumerate(parse_stages(recipe.stages)):
            info = STAGES[name]
            if info.makes_student and teacher is None:
                teacher = handle  # the model as it stands before the first student-making stage
                if isinstance(handle, MoEHandle):
                    handle = handle.densify()  # students are dense; the mixture stays the teacher
            work = stage_dir(job.home, job.run_id, data.name, index, name)
            started = time.perf_counter()
            out = info.run(handle, StageContext(data, teacher, work, recipe.data.seed), config)
            record = record_stage(
                workspace, out, stage=name, config=config, derive_recipe=job.recipe, domain=data.name,
                parent=parent, fingerprints=data.fingerprints, started=started, synthetic=synthetic,
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
        return finish_domain(
            registry, parent, handle, data.name, test, data.fingerprints["test"], job.run_id, made
        )
    finally:
        registry.close()


def _score(handle: EncoderHandle, head: str, pairs: tuple[list[str], list[int]]) -> dict[str, float]:
    texts, labels = pairs
    return classification_metrics(
        handle.predict(texts, head, batch_size=64), labels, len(handle.labels[head])
    )


def run_derive(recipe: DeriveRecipe, registry: Registry) -> list[dict[str, Any]]:
    """Derive for every domain of the recipe through its executor; the run is recorded in the registry."""
    workspace = Workspace(registry)
    names = domain_names(recipe.data)
    for name in names:  # each names directories and models: refused before anything is written
        check_path_name(name, "domain name")
    with workspace.run("derive", recipe) as run:
        jobs = [
            DomainJob(recipe.model_dump(mode="json"), n, str(workspace.home), registry.url, run.id)
            for n in names
        ]
        results = make_executor(recipe.executor).map(derive_domain, jobs, names=names)
        run.summary = {"domains": results}
    return results


def load_derive_recipe(path: str | Path, overrides: list[str] | None = None) -> DeriveRecipe | LMDeriveRecipe:
    """A derive recipe of either task, chosen by its ``task`` key (``classification`` by default)."""
    data = apply_overrides(read_yaml(path), overrides or [])
    schema = LMDeriveRecipe if isinstance(data, dict) and data.get("task") == "causal_lm" else DeriveRecipe
    return validate(schema, data, source=str(path))


def run_any_derive(recipe: DeriveRecipe | LMDeriveRecipe, registry: Registry) -> list[dict[str, Any]]:
    """:func:`run_derive` for classification recipes, :func:`run_lm_derive_recipe` for causal-LM ones."""
    if isinstance(recipe, LMDeriveRecipe):
        return run_lm_derive_recipe(recipe, registry)
    return run_derive(recipe, registry)
