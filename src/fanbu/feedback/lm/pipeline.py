"""``fanbu feedback`` on causal LMs (``task: causal_lm``): experts, methods, the LM gate, promotion.

As for classifiers (:mod:`fanbu.feedback.pipeline`): every candidate is registered as the next version
of the champion's name, gated against the champion on the gate splits (each domain's, the held-out
corpus's validation texts, the instruction prompts), and the best that passes (lowest mean domain gate
log-perplexity) is promoted. Test splits are scored after each verdict, for the report only: PGR in
log-perplexity per domain against its expert, and the held-out perplexity change (``forgetting``, in
percent).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from typing import Any

from fanbu.derive.finetune import finetune_causal_lm
from fanbu.errors import ConfigError
from fanbu.evaluate.metrics import perplexity
from fanbu.feedback.candidates import decide, register_candidate
from fanbu.feedback.gate.lm_gate import LMGateData, lm_gate, load_prompts, score_lm
from fanbu.feedback.gate.scores import ReportScores
from fanbu.feedback.lm.context import LM_METHODS, LMFeedbackContext
from fanbu.feedback.lm.data import LMSlices, load_lm_slices
from fanbu.feedback.lm.recipe import LMFeedbackSettings
from fanbu.models.artefact import Provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace, is_source

DERIVED = "lora adapter derived in this run (not registered)"


def log_pgr(v0: float, candidate: float, expert: float) -> float | None:
    """``(log v0 - log candidate) / (log v0 - log expert)`` of three perplexities; None without a gap."""
    gap = math.log(v0) - math.log(expert)
    return None if gap <= 1e-6 else (math.log(v0) - math.log(candidate)) / gap


def add_collected_lm(slices: LMSlices, registry: Registry, dataset: str) -> None:
    """Add the prompt/completion pairs of a ``fanbu collect --lm`` dataset to the corrections."""
    from fanbu.collect.lm_dataset import find_collected_lm, read_collected_lm

    examples = read_collected_lm(registry, dataset)
    slices.corrections += [(e.prompt, e.completion) for e in examples]
    slices.fingerprints["collected"] = str(find_collected_lm(registry, dataset).fingerprint)


def load_lm_champion(
    spec: str, settings: LMFeedbackSettings, workspace: Workspace, max_length: int
) -> tuple[CausalLMHandle, ModelRecord]:
    """The champion LM and its record; a model source (``package:...``) becomes ``champion_name:v*`` once."""
    if is_source(spec):
        record = workspace.registry.latest(settings.champion_name, status="champion")
        if record is None:
            handle = CausalLMHandle.from_source(spec, max_length=max_length)
            provenance = Provenance(recipe={"source": spec}, base_model=spec)
            record = workspace.save_and_register(
                handle,
                provenance,
                name=settings.champion_name,
                status="champion",
                metadata={"source": spec, "role": "pretrained large LM"},
            )
    else:
        record = workspace.champion(spec)
    handle = workspace.load(record)
    if not isinstance(handle, CausalLMHandle):
        raise ConfigError(
            f"champion {record.id} is not a causal LM but task is causal_lm; name a causal LM "
            "(package:SmolLM2-135M-Instruct) or use task: classification"
        )
    handle.max_length = max_length
    handle.model.eval()
    return handle, record


def derive_lm_experts(
    champion: CausalLMHandle, slices: LMSlices, settings: LMFeedbackSettings, workspace: Workspace, seed: int
) -> tuple[dict[str, CausalLMHandle], dict[str, str]]:
    """Domain -> expert (a LoRA adapter on a copy of the champion, or a registered LM), and its source."""
    experts, sources = {}, {}
    config = settings.experts
    if config.source == "registry":
        unknown = sorted(set(config.models) ^ set(slices.domains))
        if unknown:
            raise ConfigError(
                f"lm.experts.models must name exactly the domains {slices.domains}; check {unknown}"
            )
        for domain, ref in sorted(config.models.items()):
            handle = workspace.load(ref)
            if not isinstance(handle, CausalLMHandle):
                raise ConfigError(f"lm.experts.models.{domain}: {ref} is not a causal LM")
            handle.max_length = champion.max_length
            experts[domain], sources[domain] = handle, workspace.resolve(ref).id
        return experts, sources
    finetune = config.finetune.model_copy(
        update={"train": config.finetune.train.model_copy(update={"seed": seed})}
    )
    for domain in slices.domains:
        texts = slices.private[domain][: config.max_train]
        expert, _ = finetune_causal_lm(copy.deepcopy(champion), texts, finetune)
        expert.model.eval()
        experts[domain], sources[domain] = expert, DERIVED
    return experts, sources


def run_lm_feedback(recipe: Any, registry: Registry) -> dict[str, Any]:
    """Run every LM method of ``recipe`` (a ``FeedbackRecipe`` with ``task: causal_lm``); its summary."""
    settings: LMFeedbackSettings = recipe.lm
    workspace = Workspace(registry)
    champion, champion_record = load_lm_champion(
        recipe.champion, settings, workspace, recipe.max_length or 128
    )
    slices = load_lm_slices(settings.data)
    if settings.data.collected is not None:
        add_collected_lm(slices, registry, settings.data.collected)
    gate_config = settings.gate
    gate_data = LMGateData(
        slices.gate, {slices.heldout_name: slices.heldout_gate}, load_prompts(gate_config.prompts_file)
    )
    report_data = LMGateData(slices.test, {slices.heldout_name: slices.heldout_test})
    dumped = recipe.model_dump(mode="json")
    with workspace.run("feedback", recipe) as run:
        experts, sources = derive_lm_experts(champion, slices, settings, workspace, recipe.seed)
        ctx = LMFeedbackContext(
            champion,
            experts,
            slices.public,
            slices.validation,
            slices.general,
            slices.corrections,
            run.dir,
            recipe.seed,
            gate_config.batch_size,
        )
        parents = [champion_record.id, *(s for s in sources.values() if s != DERIVED)]
        champion_gate = score_lm(champion, gate_data, gate_config)
        champion_test = score_lm(champion, report_data, gate_config)  # the report's; no decision reads it
        expert_ppl = {
            d: perplexity(e.model, e.tokenizer, slices.test[d], gate_config.batch_size, champion.max_length)
            for d, e in experts.items()
        }
        rows, gated, reports = [], [], {}
        for index, (name, config) in enumerate(recipe.parsed_strategies()):
            started = time.perf_counter()
            out = LM_METHODS.get(name).run(
                dataclasses.replace(ctx, work_dir=run.dir / f"{index}-{name}"), config
            )
            seconds = time.perf_counter() - started
            record = register_candidate(
                workspace, champion_record, parents, name, config, out, slices.fingerprints, seconds, dumped
            )
            decision = lm_gate(out.handle, champion, gate_data, gate_config, champion_gate)
            gated.append((record, decision))
            report = score_lm(out.handle, report_data, gate_config)
            reports[record.id] = ReportScores(report, champion_test)
            rows.append(
                {
                    "name": name,
                    "model": record.id,
                    "seconds": seconds,
                    **lm_report_row(report, champion_test, expert_ppl, slices),
                    "gate": {"promoted": decision.promoted, "reason": decision.reason},
                    "decision_split": "gate",
                    "decision": decision.summary(),
                }
            )
        best = decide(registry, champion_record, gated, slices.fingerprints, run.id, reports)
        for row in rows:
            final = registry.get_model(row["model"])
            row["gate"] = {"status": final.status, "reason": final.reason, "passed": row["gate"]["promoted"]}
        summary = {
            "run": run.id,
            "task": "causal_lm",
            "champion": champion_record.id,
            "promoted": best,
            "experts": sources,
            "expert_ppl": expert_ppl,
            "heldout": [slices.heldout_name],
            "decision_split": "gate",
            "report_split": "test",
            "strategies": rows,
        }
        run.summary = summary
    return summary


def lm_report_row(
    report: dict[str, dict[str, float]],
    champion: dict[str, dict[str, float]],
    expert_ppl: dict[str, float],
    slices: LMSlices,
) -> dict[str, Any]:
    """PGR in log-perplexity per domain and its mean, the held-out perplexity change (test splits)."""
    pgr = {d: log_pgr(champion[d]["ppl"], report[d]["ppl"], expert_ppl[d]) for d in slices.domains}
    known = [v for v in pgr.values() if v is not None]
    held = slices.heldout_name
    change = report[held]["ppl"] / champion[held]["ppl"] - 1
    return {
        "ppl": {t: v["ppl"] for t, v in report.items()},
        "pgr": pgr,
        "pgr_mean": statistics.fmean(known) if known else None,
        "heldout_ppl_change": change,
        "forgetting": 100 * change,  # percent, in the classifiers' "forgetting" column
        "report_split": "test",
    }
