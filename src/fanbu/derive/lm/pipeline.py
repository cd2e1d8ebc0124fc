"""``fanbu derive`` for ``task: causal_lm`` recipes: every domain's stages, saved and registered.

Mirrors :mod:`fanbu.derive.pipeline` (the encoder path): load the teacher (a registered causal LM or a
source, registered once as an archived root), run the stages in order, save and register each output
with the previous one as its parent, record validation perplexity for each, and score the final model
once on the domain's test split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanbu.derive.lm.data import LMDomainData, lm_domain_names, load_lm_domain
from fanbu.derive.lm.recipe import LMDeriveRecipe
from fanbu.derive.lm.stages import LM_STAGES, LMStageContext, parse_lm_stages
from fanbu.derive.stage_record import finish_domain, record_stage, stage_dir
from fanbu.errors import ConfigError
from fanbu.evaluate.metrics import perplexity
from fanbu.execute import make_executor
from fanbu.io import check_path_name
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace, is_source


@dataclass(frozen=True)
class LMDomainJob:
    """One LM domain's derivation, self-contained for another process or Ray."""

    recipe: dict[str, Any]
    domain: str
    home: str
    db_url: str = field(repr=False)
    run_id: str


def load_lm_teacher(workspace: Workspace, spec: str, max_length: int) -> tuple[CausalLMHandle, str]:
    """The causal LM ``spec`` names and its registry id (a source is registered once, archived)."""
    if is_source(spec):
        handle = CausalLMHandle.from_source(spec, max_length=max_length)
        name = (
            spec.removeprefix("package:").replace("/", "--") if not Path(spec).exists() else Path(spec).name
        )
        existing = workspace.registry.latest(name)
        if existing is not None:
            return handle, existing.id
        record = workspace.registry.register_model(
            name=name,
            path=spec,
            kind="causal_lm",
            status="archived",
            metadata={"source": spec, "role": "pretrained base"},
        )
        return handle, record.id
    record = workspace.resolve(spec)
    handle = workspace.load(record)
    if not isinstance(handle, CausalLMHandle):
        raise ConfigError(
            f"teacher {spec!r} is a {record.kind} model; a task: causal_lm recipe needs a causal LM (e.g. "
            "package:SmolLM2-135M-Instruct); derive classifiers with recipes/derive.yaml"
        )
    handle.max_length = max_length
    return handle, record.id


def score_ppl(handle: CausalLMHandle, texts: list[str]) -> dict[str, float]:
    """``{"ppl": perplexity}`` of ``handle`` on ``texts``."""
    return {
        "ppl": perplexity(handle.model, handle.tokenizer, texts, batch_size=4, max_length=handle.max_length)
    }


def derive_lm_domain(job: LMDomainJob) -> dict[str, Any]:
    """Run every LM stage for one domain; the ids of the models made and the final test perplexity."""
    recipe = LMDeriveRecipe.model_validate(job.recipe)
    workspace = Workspace(Registry(job.db_url, Path(job.home)))
    registry = workspace.registry
    try:
        data: LMDomainData = load_lm_domain(recipe.data, job.domain)
        handle, parent = load_lm_teacher(workspace, recipe.teacher, recipe.max_length)
        teacher: CausalLMHandle | None = None
        made = []
        for index, (name, config) in enumerate(parse_lm_stages(recipe.stages)):
            info = LM_STAGES[name]
            if info.makes_student and teacher is None:
                teacher = handle
            work = stage_dir(job.home, job.run_id, data.name, index, name)
            started = time.perf_counter()
            out = info.run(handle, LMStageContext(data, teacher, work, recipe.data.seed), config)
            record = record_stage(
                workspace, out, stage=name, config=config, derive_recipe=job.recipe, domain=data.name,
                parent=parent, fingerprints=data.fingerprints, started=started,
            )
            registry.record_evaluation(
                record.id,
                domain=data.name,
                split="validation",
                metrics=score_ppl(out.handle, data.validation),
                dataset_fingerprint=data.fingerprints["validation"],
                run_id=job.run_id,
            )
            made.append(record.id)
            parent, handle = record.id, out.handle
        test = score_ppl(handle, data.test)
        return finish_domain(
            registry, parent, handle, data.name, test, data.fingerprints["test"], job.run_id, made
        )
    finally:
        registry.close()


def run_lm_derive_recipe(recipe: LMDeriveRecipe, registry: Registry) -> list[dict[str, Any]]:
    """Derive causal LMs for every domain of the recipe through its executor; recorded as a derive run."""
    workspace = Workspace(registry)
    names = lm_domain_names(recipe.data)
    for name in names:
        check_path_name(name, "domain name")
    with workspace.run("derive", recipe) as run:
        jobs = [
            LMDomainJob(recipe.model_dump(mode="json"), n, str(workspace.home), registry.url, run.id)
            for n in names
        ]
        results = make_executor(recipe.executor).map(derive_lm_domain, jobs, names=names)
        run.summary = {"domains": results}
    return results
