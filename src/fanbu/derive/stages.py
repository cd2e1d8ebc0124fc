"""The derive stages, each registered in :data:`STAGES` (a :class:`fanbu.registration.Catalog`) next to
its code, with a name, a summary, a reference, a typed config and its capabilities.

A stage takes the current model of a domain and returns the next one. The pipeline saves and registers
each stage's output with the previous stage's model as its parent. The **teacher** of a domain is the
model as it stood right before the first stage with the ``makes_student`` capability (``prune`` or
``search``; usually the large model after ``finetune`` on the domain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from fanbu.derive.data import DomainData
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registration import Catalog, Entry


@dataclass
class StageContext:
    """What a stage may use besides the model it transforms."""

    data: DomainData
    teacher: EncoderHandle | None
    work_dir: Path
    seed: int = 0


@dataclass
class StageOutput:
    """A stage's result: the new model and how it relates to its parent."""

    handle: EncoderHandle
    relation: str
    metrics: dict[str, float] = field(default_factory=dict)
    save: Callable[[Path, Provenance], Any] | None = None  # custom artefact writer (default: handle.save)
    hf_relation: str | None = (
        None  # base_model_relation for the model card (finetune/adapter/quantized/merge)
    )


StageFn = Callable[[EncoderHandle, StageContext, Any], StageOutput]


@dataclass(frozen=True)
class StageInfo(Entry):
    """One registered stage: its :class:`~fanbu.registration.Entry`, with the stage function as ``run``."""

    @property
    def run(self) -> StageFn:
        """The stage function ``(handle, ctx, config) -> StageOutput``."""
        return self.impl  # type: ignore[no-any-return]

    @property
    def makes_student(self) -> bool:
        """The model before this stage becomes the domain's teacher (capability ``makes_student``)."""
        return "makes_student" in self.capabilities


STAGES: Catalog[StageInfo] = Catalog(
    "stage",
    field="stages",
    capabilities={"makes_student": "the model as it stood before this stage becomes the domain's teacher"},
    entry=StageInfo,
)

# ``@register_stage(name, summary=..., reference=..., config=..., capabilities=...)`` registers a stage.
register_stage = STAGES.register


def _heads(
    data: DomainData,
) -> tuple[dict[str, tuple[list[str], list[int]]], dict[str, tuple[list[str], list[int]]]]:
    return {data.name: data.train}, {data.name: data.validation}


# --------------------------------------------------------------------------- finetune
from fanbu.derive.finetune import FinetuneConfig, finetune, save_adapter


@register_stage(
    "finetune",
    summary="Full or LoRA (PEFT) fine-tuning on the domain's private slice.",
    reference="https://arxiv.org/abs/2106.09685",
    config=FinetuneConfig,
)
def _finetune(handle: EncoderHandle, ctx: StageContext, config: FinetuneConfig) -> StageOutput:
    train, validation = _heads(ctx.data)
    tuned, result = finetune(handle, train, config, validation, checkpoint_dir=ctx.work_dir / "checkpoints")
    metrics = {"val_acc": result.state.best or 0.0}
    if config.mode == "lora" and not config.lora.merge:  # keep the adapter: save it the PEFT way
        save = lambda path, provenance: save_adapter(tuned, path, provenance)
        return StageOutput(tuned, "adapter", metrics, save=save, hf_relation="adapter")
    return StageOutput(tuned, "finetune", metrics, hf_relation="finetune")


# --------------------------------------------------------------------------- ssl
from fanbu.train.selfsup import SSLConfig, continue_pretraining

SSLPool = Literal["train", "transfer"]


class SSLStageConfig(SSLConfig):
    """Self-supervised continued pretraining on the domain's unlabeled text, before fine-tuning or
    distillation (its labels are never read)."""

    pool: list[SSLPool] = Field(
        default_factory=lambda: ["train", "transfer"],
        min_length=1,
        description="Which texts form the unlabeled pool: the private training texts (labels dropped) "
        "and/or the transfer texts (data.transfer).",
    )


def ssl_pool(data: DomainData, pool: list[SSLPool]) -> list[str]:
    """The texts of ``pool``'s parts of ``data``, in order (training texts first)."""
    parts = {"train": list(data.train[0]), "transfer": list(data.transfer)}
    return [text for part in dict.fromkeys(pool) for text in parts[part]]


@register_stage(
    "ssl",
    summary="Self-supervised continued pretraining on the domain's unlabeled text (masked-LM with a tied "
    "head, or SimCSE on pooled features) before fine-tuning or distillation.",
    reference="https://arxiv.org/abs/2004.10964",
    config=SSLStageConfig,
)
def _ssl(handle: EncoderHandle, ctx: StageContext, config: SSLStageConfig) -> StageOutput:
    settings = SSLConfig(**config.model_dump(exclude={"pool"}))
    texts = ssl_pool(ctx.data, config.pool)
    result = continue_pretraining(
        handle, texts, settings, seed=ctx.seed, setting=f"stage ssl (pool {config.pool})"
    )
    metrics = {
        "ssl_texts": float(result.texts),
        "ssl_first_loss": result.first_loss,
        "ssl_last_loss": result.last_loss,
    }
    return StageOutput(handle, "pretrained", metrics, hf_relation="finetune")


# --------------------------------------------------------------------------- prune
from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder


class PruneStageConfig(PruneConfig):
    """Structured pruning settings plus how much calibration data to score units on."""

    calibration: int = Field(
        256, ge=1, description="Private training texts used to score units and count tokens."
    )


def calibration_for(ctx: StageContext, size: int) -> Calibration:
    texts, labels = ctx.data.train
    return Calibration(texts=texts[:size], labels=labels[:size], head=ctx.data.name)


@register_stage(
    "prune",
    summary="Structured pruning: layers, heads, FFN neurons, hidden width, vocabulary; physically smaller.",
    reference="https://arxiv.org/abs/2301.12900",
    config=PruneStageConfig,
    capabilities={"makes_student"},
)
def _prune(handle: EncoderHandle, ctx: StageContext, config: PruneStageConfig) -> StageOutput:
    settings = PruneConfig(**config.model_dump(exclude={"calibration"}))
    pruned = prune_encoder(handle, settings, calibration_for(ctx, config.calibration))
    return StageOutput(pruned, "pruned")


# --------------------------------------------------------------------------- distill
from fanbu.derive.distill import DistillConfig, distill


@register_stage(
    "distill",
    summary="Knowledge distillation from the domain teacher: soft logits, projected hidden states, attention "
    "relations.",
    reference="https://arxiv.org/abs/2002.10957",
    config=DistillConfig,
)
def _distill(handle: EncoderHandle, ctx: StageContext, config: DistillConfig) -> StageOutput:
    if ctx.teacher is None:
        raise ValueError("the distill stage needs a teacher: put it after a prune or search stage")
    train, validation = _heads(ctx.data)
    if ctx.data.transfer:
        texts, labels = train[ctx.data.name]
        transfer = list(ctx.data.transfer)
        train = {ctx.data.name: (texts + transfer, labels + [-1] * len(transfer))}
    result = distill(
        handle, ctx.teacher, train, config, validation, checkpoint_dir=ctx.work_dir / "checkpoints"
    )
    return StageOutput(handle, "distilled", {"val_acc": result.state.best or 0.0})


# --------------------------------------------------------------------------- quantize
from fanbu.derive.quantize import QuantizeConfig, save_deployment


@register_stage(
    "quantize",
    summary="int8 dynamic quantisation for CPU and ONNX export checked against PyTorch with onnxruntime.",
    reference="https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html",
    config=QuantizeConfig,
)
def _quantize(handle: EncoderHandle, ctx: StageContext, config: QuantizeConfig) -> StageOutput:
    check = ctx.data.validation[0][: config.check_texts]
    reports: dict[str, float] = {}

    def save(path: Path, provenance: Provenance) -> None:
        report = save_deployment(handle, path, config, provenance, check)
        reports["onnx_max_diff"] = float(report.onnx_max_diff or 0.0)

    return StageOutput(handle, "quantized", reports, save=save, hf_relation="quantized")


def parse_stages(raw: list[Any]) -> list[tuple[str, BaseModel]]:
    """Validate ``[{stage_name: {settings}}, ...]`` against each stage's config, with field paths."""
    return STAGES.parse(raw)


# --------------------------------------------------------------------------- search
from fanbu.derive.search import (
    SearchConfig,
    WarmStart,
    load_study,
    probe_accuracy,
    save_study,
    search,
    warm_configs,
)
from fanbu.evaluate.speed import measure_latency, param_count


class SearchStageConfig(SearchConfig):
    """Budgeted architecture search: each trial prunes the teacher and distils it briefly."""

    importance: str = Field("taylor", description="Unit importance used to build every candidate.")
    calibration: int = Field(256, ge=1, description="Private texts used to score units and count tokens.")
    trial_examples: int = Field(
        300, ge=8, description="Private training examples per trial's short distillation."
    )
    trial_epochs: int = Field(2, ge=1, description="Epochs of each trial's short distillation.")
    trial: Literal["distill", "probe"] = Field(
        "distill",
        description="How a trial is scored on validation: a short distillation (distill), or a logistic "
        "regression on the pruned model's frozen pooled features (probe: no training, many times faster).",
    )
    warm_start: WarmStart | None = Field(
        None,
        description="Learn from earlier domains' finished studies: their best architectures, ranked by "
        "mean score relative to each study's best, are tried first. Every search writes its study.json "
        "in its stage directory.",
    )


@register_stage(
    "search",
    summary="Optuna search over depth, heads, width, FFN and vocabulary for the best validation score "
    "under a budget.",
    reference="https://arxiv.org/abs/1907.10902",
    config=SearchStageConfig,
    capabilities={"makes_student"},
)
def _search(handle: EncoderHandle, ctx: StageContext, config: SearchStageConfig) -> StageOutput:
    calibration = calibration_for(ctx, config.calibration)
    texts, labels = ctx.data.train
    subset = {ctx.data.name: (texts[: config.trial_examples], labels[: config.trial_examples])}
    short = DistillConfig(
        train={"epochs": config.trial_epochs, "lr": 5e-4, "progress": False, "seed": ctx.seed}
    )
    encoder_config = handle.model.encoder.config
    head_dim = encoder_config.hidden_size // encoder_config.num_attention_heads
    # BERT derives head width from hidden/heads: fixing the teacher's head width ties hidden to heads
    base = PruneConfig(importance=config.importance, head_dim=head_dim)

    def build(candidate: PruneConfig) -> EncoderHandle:
        return prune_encoder(handle, candidate, calibration)

    def score(candidate: EncoderHandle) -> float:
        if config.trial == "probe":
            return probe_accuracy(candidate, subset[ctx.data.name], ctx.data.validation)
        result = distill(candidate, handle, subset, short, {ctx.data.name: ctx.data.validation})
        return float(result.state.best or 0.0)

    def latency(candidate: EncoderHandle) -> float:
        sample = ctx.data.validation[0][:16]
        predict = lambda batch: candidate.predict(list(batch), ctx.data.name, batch_size=1)
        return measure_latency(predict, sample, batch_size=1, iterations=10).p50_ms

    settings = SearchConfig(**config.model_dump(include=set(SearchConfig.model_fields)))
    warm = []
    if config.warm_start is not None:
        studies = [load_study(path) for path in config.warm_start.studies]
        warm = warm_configs(studies, settings.space, config.warm_start.enqueue)
    result = search(build, score, settings, param_count(handle.model), latency, base, warm_start=warm)
    save_study(ctx.work_dir / "study.json", ctx.data.name, result)
    pruned = prune_encoder(handle, result.best, calibration)
    return StageOutput(pruned, "pruned", {"search_best_val_acc": result.best_score,
                                          "search_trials": float(len(result.trials)),
                                          "search_warm_started": float(len(warm))})
