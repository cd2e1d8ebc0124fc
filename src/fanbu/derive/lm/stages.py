"""The causal-LM derive stages, registered in :data:`LM_STAGES` (a :class:`fanbu.registration.Catalog`).

``finetune`` (full or LoRA on the domain's text) makes the domain teacher; ``prune`` (Minitron width
and depth, the ``makes_student`` stage) cuts the student from it; ``distill`` heals the student from
the domain teacher's cached top-k logits; ``export`` checks int8 and CTranslate2 parity and writes the
CTranslate2 model next to the fp32 safetensors.

The LM stages train without loop checkpoints: the loop's checkpoint writes ``state_dict()`` with
safetensors, which refuses the tied ``embed_tokens`` / ``lm_head`` pair of Llama-family models.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from fanbu.config import Strict
from fanbu.derive.distill import LMDistillConfig, distill_causal_lm
from fanbu.derive.finetune import FinetuneConfig, finetune_causal_lm
from fanbu.derive.lm.data import LMDomainData
from fanbu.derive.prune import Calibration, PruneConfig, prune_causal_lm
from fanbu.errors import ConfigError
from fanbu.models.artefact import Provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.lm_export import export_ctranslate2, lm_parity, quantize_lm_int8, torch_greedy, torch_scorer
from fanbu.models.lm_gguf import export_gguf, gguf_parity
from fanbu.registration import Catalog, Entry


@dataclass
class LMStageContext:
    """What an LM stage may use besides the model it transforms."""

    data: LMDomainData
    teacher: CausalLMHandle | None
    work_dir: Path
    seed: int = 0


@dataclass
class LMStageOutput:
    """A stage's result: the new model, its relation to the parent, metrics, and an optional writer."""

    handle: CausalLMHandle
    relation: str
    metrics: dict[str, Any]
    save: Callable[[Path, Provenance], Any] | None = None
    hf_relation: str | None = None


@dataclass(frozen=True)
class LMStageInfo(Entry):
    """One registered LM stage; ``run(handle, ctx, config) -> LMStageOutput``."""

    @property
    def run(self) -> Callable[[CausalLMHandle, LMStageContext, Any], LMStageOutput]:
        """The stage function."""
        return self.impl  # type: ignore[no-any-return]

    @property
    def makes_student(self) -> bool:
        """The model before this stage becomes the domain's teacher."""
        return "makes_student" in self.capabilities


LM_STAGES: Catalog[LMStageInfo] = Catalog(
    "LM stage",
    field="stages",
    capabilities={"makes_student": "the model as it stood before this stage becomes the domain's teacher"},
    entry=LMStageInfo,
)
register_lm_stage = LM_STAGES.register


def parse_lm_stages(raw: list[Any]) -> list[tuple[str, BaseModel]]:
    """Validate ``[{stage_name: {settings}}, ...]`` against each LM stage's config."""
    return LM_STAGES.parse(raw)


@register_lm_stage(
    "finetune",
    summary="Full or LoRA (PEFT) fine-tuning of the causal LM on the domain's text: the domain teacher.",
    reference="https://arxiv.org/abs/2106.09685",
    config=FinetuneConfig,
)
def _finetune(handle: CausalLMHandle, ctx: LMStageContext, config: FinetuneConfig) -> LMStageOutput:
    if config.mode == "lora" and not config.lora.merge:
        raise ConfigError("finetune: LM derive merges LoRA into the weights; set lora.merge: true")
    tuned, result = finetune_causal_lm(handle, ctx.data.train, config, ctx.data.validation)
    return LMStageOutput(tuned, "finetune", {"val_ppl": -(result.state.best or 0.0)}, hf_relation="finetune")


class LMPruneStageConfig(PruneConfig):
    """Structured pruning settings plus how many training texts calibrate the importance."""

    calibration: int = Field(64, ge=1, description="Training texts that importance is computed on.")


@register_lm_stage(
    "prune",
    summary="Minitron width (KV groups, FFN, hidden + tied embedding) and ShortGPT depth pruning.",
    reference="https://arxiv.org/abs/2407.14679",
    config=LMPruneStageConfig,
    capabilities={"makes_student"},
)
def _prune(handle: CausalLMHandle, ctx: LMStageContext, config: LMPruneStageConfig) -> LMStageOutput:
    settings = PruneConfig(**config.model_dump(exclude={"calibration"}))
    calibration = Calibration(ctx.data.train[: config.calibration], batch_size=4, max_batches=16)
    return LMStageOutput(prune_causal_lm(handle, settings, calibration), "pruned", {})


@register_lm_stage(
    "distill",
    summary="Token-level KD from the domain teacher's cached top-k logits over packed windows.",
    reference="https://arxiv.org/abs/2408.11796",
    config=LMDistillConfig,
)
def _distill(handle: CausalLMHandle, ctx: LMStageContext, config: LMDistillConfig) -> LMStageOutput:
    if ctx.teacher is None:
        raise ConfigError("the distill stage needs a teacher: put it after a prune stage")
    result = distill_causal_lm(
        handle,
        ctx.teacher,
        ctx.data.train,
        config,
        ctx.data.validation,
    )
    return LMStageOutput(handle, "distilled", {"val_ppl": -(result.state.best or 0.0)})


class LMExportConfig(Strict):
    """Deployment exports of a causal LM, each checked against the fp32 model on validation text."""

    int8: bool = Field(
        True, description="Check PyTorch dynamic int8 (re-quantised on load from the fp32 weights)."
    )
    ctranslate2: bool = Field(
        True, description="Write a CTranslate2 int8 model under ctranslate2/ (edge runtime)."
    )
    gguf: Literal["none", "f32", "f16", "q8_0"] = Field(
        "none",
        description="Also write model.gguf (llama.cpp layout; BPE tokenizers) with these matrix types.",
    )
    tolerance: float = Field(
        0.05, gt=0, description="Allowed relative perplexity change of an export against fp32 (0.05: 5%)."
    )
    check_texts: int = Field(8, ge=1, description="Validation texts the parity check scores.")


@register_lm_stage(
    "export",
    summary="int8 (PyTorch dynamic), CTranslate2 int8 and GGUF exports, each with a perplexity parity check.",
    reference="https://opennmt.net/CTranslate2/guides/transformers.html",
    config=LMExportConfig,
)
def _export(handle: CausalLMHandle, ctx: LMStageContext, config: LMExportConfig) -> LMStageOutput:
    texts = ctx.data.validation[: config.check_texts]
    prompts = [t[:80] for t in texts[:2]]
    metrics: dict[str, Any] = {}
    if config.int8:
        int8 = quantize_lm_int8(handle)
        metrics["int8"] = lm_parity(
            handle, torch_scorer(int8), torch_greedy(int8), texts, prompts, config.tolerance
        ).as_dict()
    ct2_dir = ctx.work_dir / "ctranslate2"
    if config.ctranslate2:
        exported = export_ctranslate2(handle, ct2_dir)
        metrics["ctranslate2"] = lm_parity(
            handle, exported.score, exported.greedy, texts, prompts, config.tolerance
        ).as_dict()
    if config.gguf != "none":
        gguf_path = export_gguf(handle, ctx.work_dir / "model.gguf", config.gguf)
        metrics["gguf"] = gguf_parity(handle, gguf_path, texts, prompts, config.tolerance).as_dict()
    failed = [name for name, report in metrics.items() if not report["passed"]]
    if failed:
        raise ConfigError(
            f"export: {failed} perplexity is beyond tolerance {config.tolerance} of fp32 ({metrics}); raise "
            "export.tolerance or turn that export off"
        )

    def save(path: Path, provenance: Provenance) -> None:
        handle.save(path, provenance)
        if config.ctranslate2:
            shutil.copytree(ct2_dir, path / "ctranslate2")
        if config.gguf != "none":
            shutil.copy(ctx.work_dir / "model.gguf", path / "model.gguf")

    return LMStageOutput(handle, "quantized", metrics, save=save, hf_relation="quantized")
