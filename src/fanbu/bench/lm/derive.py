"""Derive rows of ``fanbu bench lm`` (and ``fanbu bench derive --lm``): small causal LMs per BBC domain.

Per BBC News category, with SmolLM2-135M-Instruct (dequantised from the packaged Q4_1 GGUF) as the
large model:

- ``teacher``: the base model;
- ``domain_teacher``: the base LoRA-tuned on the domain's packed training text (merged);
- ``student_05`` / ``student_025``: the domain teacher pruned in width and depth (Minitron activation
  importance, ShortGPT block influence) to about 0.5 / 0.25 of the parameters, then distilled from the
  domain teacher's top-k logits, cached once over the same packed windows;
- ``scratch_05``: a randomly initialised model of ``student_05``'s shape trained on the same windows for
  the same steps (next-token loss; there is no teacher knowledge to use): equal tokens.

Every model is scored once by perplexity on the category's test articles (no choice reads them: the
LoRA and distillation runs early-stop on validation). Speed is tokens/s of greedy generation of
``gen_tokens`` tokens at batch 1 in PyTorch fp32 (the median of ``speed_repeats`` runs). The
``exports`` section checks ``student_05``'s int8 and CTranslate2 int8 exports against fp32.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from fanbu.config import Strict
from fanbu.data.builtin import bbc_news_lm_domains
from fanbu.derive.distill import LMDistillConfig, build_cache, distill_from_cache
from fanbu.derive.finetune import FinetuneConfig, LoraSettings, finetune_causal_lm
from fanbu.derive.presets import LM_STUDENT_HALF, LM_STUDENT_QUARTER
from fanbu.derive.prune import Calibration, PruneConfig, prune_causal_lm
from fanbu.evaluate.metrics import perplexity
from fanbu.evaluate.speed import param_count
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.lm_export import export_ctranslate2, lm_parity, quantize_lm_int8, torch_greedy, torch_scorer
from fanbu.models.lm_gguf import export_gguf, gguf_parity
from fanbu.train.config import TrainConfig

LM_TEACHER = "package:SmolLM2-135M-Instruct"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELS = ("teacher", "domain_teacher", "student_05", "student_025", "scratch_05")
BARS = {
    "student_05_vs_domain_teacher": 1.5,
    "student_025_vs_domain_teacher": 2.5,
    "scratch_vs_student_05": 3.0,
    "scratch_vs_student_025": 3.0,
    "student_speedup": 1.6,
}


class LMDeriveBenchSettings(Strict):
    """The derive rows of the causal-LM bench (steps and sizes scaled down from Minitron's recipe)."""

    teacher: str = Field(LM_TEACHER, description="The large causal LM.")
    domains: list[str] | None = Field(None, description="BBC domains (bbc-business, ...); default all five.")
    max_docs: int | None = Field(None, ge=10, description="Cap on articles per category before splitting.")
    window: int = Field(256, ge=16, description="Tokens per packed training window and per scored window.")
    max_windows: int = Field(
        600, ge=1, description="Packed training windows per domain (tokens = window x this)."
    )
    max_validation: int = Field(24, ge=1, description="Validation articles for early stopping.")
    max_test: int = Field(60, ge=1, description="Test articles scored per model.")
    batch_size: int = Field(8, ge=1, description="Windows per optimiser step (every run).")
    lora_steps: int = Field(150, ge=1, description="Optimiser steps of the domain teacher's LoRA.")
    lora_lr: float = Field(2e-4, gt=0, description="Peak learning rate of the LoRA.")
    lora_r: int = Field(16, ge=1, description="LoRA rank (on every attention and MLP projection).")
    distill_steps: int = Field(
        300, ge=1, description="Optimiser steps of each student's distillation (and of scratch)."
    )
    distill_lr: float = Field(
        3e-4, gt=0, description="Peak learning rate of the students (Minitron: 1e-4 to 3e-4)."
    )
    scratch_lr: float = Field(1e-3, gt=0, description="Peak learning rate of the scratch student.")
    alpha: float = Field(
        0.9, ge=0, le=1, description="Weight of the cached top-k KL; the LM loss gets 1 - alpha."
    )
    temperature: float = Field(1.0, gt=0, description="KD temperature.")
    top_k: int = Field(64, ge=1, description="Teacher logits cached per token.")
    calibration: int = Field(
        64, ge=1, description="Training articles that pruning importance is computed on."
    )
    half: dict[str, Any] = Field(
        default_factory=lambda: dict(LM_STUDENT_HALF), description="PruneConfig of student_05."
    )
    quarter: dict[str, Any] = Field(
        default_factory=lambda: dict(LM_STUDENT_QUARTER), description="PruneConfig of student_025."
    )
    gen_tokens: int = Field(128, ge=1, description="Tokens generated per speed measurement (batch 1).")
    speed_repeats: int = Field(3, ge=1, description="Speed runs per model; the median is reported.")
    exports: bool = Field(True, description="Check student_05's int8 and CTranslate2 exports (first domain).")
    seed: int = Field(0, description="Seeds splits, batch order and initialisation.")


def lm_derive_settings(quick: bool) -> LMDeriveBenchSettings:
    """``quick``: one domain, 160 windows of 128 tokens (20k tokens), 20 LoRA and 60 distillation steps of 8
    windows at a peak rate of 1e-3 (about 11 minutes on 2 cores). Full: every domain, 600 windows of 256
    tokens (154k tokens), 150 LoRA and 300 distillation steps per model at Minitron's 3e-4.

    The quick rate: with 40 steps on bbc-tech, student_05's *validation* perplexity was 114 at 3e-4, 99 at
    1e-3 and 114 at 2e-3 (student_025: 295 at 1e-3, 272 at 2e-3); a short healing budget wants a higher
    rate than Minitron's, which heals on billions of tokens."""
    if not quick:
        return LMDeriveBenchSettings()
    return LMDeriveBenchSettings(
        domains=["bbc-tech"],
        window=128,
        max_windows=160,
        max_validation=8,
        max_test=20,
        lora_steps=20,
        distill_steps=60,
        distill_lr=1e-3,
        speed_repeats=1,
    )


def _train(steps: int, lr: float, settings: LMDeriveBenchSettings) -> TrainConfig:
    return TrainConfig(
        epochs=1000,
        max_steps=steps,
        batch_size=settings.batch_size,
        lr=lr,
        warmup_ratio=0.05,
        seed=settings.seed,
        metric="score",
        mode="max",
        progress=False,
    )


@torch.no_grad()
def tokens_per_second(handle: CausalLMHandle, prompt: str, tokens: int, repeats: int) -> float:
    """Median tokens/s of greedy generation of exactly ``tokens`` tokens at batch 1 (eos suppressed)."""
    generate = torch_greedy(handle)
    ids = handle.tokenizer(prompt, add_special_tokens=False)["input_ids"][:32]
    generate(ids, 4)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate(ids, tokens)
        rates.append(tokens / (time.perf_counter() - started))
    return statistics.median(rates)


def scratch_like(student: CausalLMHandle, seed: int) -> CausalLMHandle:
    """A randomly initialised causal LM of the student's exact configuration and tokenizer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(copy.deepcopy(student.model.config))
    return CausalLMHandle(model, student.tokenizer, student.max_length)


def derive_models(
    base: CausalLMHandle, train: list[str], validation: list[str], settings: LMDeriveBenchSettings
) -> dict[str, CausalLMHandle]:
    """The five models of one domain (the base handle is not modified)."""
    lora = FinetuneConfig(
        mode="lora",
        lora=LoraSettings(r=settings.lora_r, alpha=2 * settings.lora_r, target_modules=LORA_TARGETS),
        train=_train(settings.lora_steps, settings.lora_lr, settings),
    )
    domain_teacher, _ = finetune_causal_lm(
        copy.deepcopy(base),
        train,
        lora,
        validation,
        pack_window=settings.window,
        max_windows=settings.max_windows,
    )
    distill = LMDistillConfig(
        alpha=settings.alpha,
        temperature=settings.temperature,
        top_k=settings.top_k,
        window=settings.window,
        train=_train(settings.distill_steps, settings.distill_lr, settings),
    )
    windows, cache = build_cache(domain_teacher, train, distill, settings.max_windows)
    calibration = Calibration(train[: settings.calibration], batch_size=4, max_batches=16)
    models = {"teacher": base, "domain_teacher": domain_teacher}
    for name, shape in (("student_05", settings.half), ("student_025", settings.quarter)):
        student = prune_causal_lm(domain_teacher, PruneConfig(**shape), calibration)
        distill_from_cache(student, windows, cache, distill, validation)
        models[name] = student
    scratch = scratch_like(models["student_05"], settings.seed)
    full = FinetuneConfig(mode="full", train=_train(settings.distill_steps, settings.scratch_lr, settings))
    finetune_causal_lm(
        scratch, train, full, validation, pack_window=settings.window, max_windows=settings.max_windows
    )
    models["scratch_05"] = scratch
    return models


def export_checks(handle: CausalLMHandle, texts: list[str], tokens: int) -> dict[str, Any]:
    """int8, CTranslate2 int8 and GGUF Q8_0 parity of ``handle`` on ``texts``; CTranslate2's tokens/s at batch 1."""
    int8 = quantize_lm_int8(handle)
    prompts = [t[:120] for t in texts[:2]]
    out: dict[str, Any] = {
        "int8": lm_parity(handle, torch_scorer(int8), torch_greedy(int8), texts, prompts).as_dict()
    }
    with tempfile.TemporaryDirectory() as tmp:  # one folder each: a GGUF beside CT2's config.json misloads
        exported = export_ctranslate2(handle, Path(tmp) / "ctranslate2")
        out["ctranslate2"] = lm_parity(handle, exported.score, exported.greedy, texts, prompts).as_dict()
        ids = handle.tokenizer(prompts[0], add_special_tokens=False)["input_ids"][:32]
        started = time.perf_counter()
        exported.greedy(ids, tokens)
        out["ctranslate2"]["tokens_per_s"] = tokens / (time.perf_counter() - started)
        gguf_path = export_gguf(handle, Path(tmp) / "gguf" / "model.gguf", "q8_0")
        out["gguf_q8_0"] = gguf_parity(handle, gguf_path, texts, prompts).as_dict()
    return out


def run_lm_derive(
    settings: LMDeriveBenchSettings,
    console: Console | None = None,
    keep: dict[str, CausalLMHandle] | None = None,
) -> dict[str, Any]:
    """The ``derive`` section of the LM bench: rows, per-domain ratios, exports and targets.

    ``keep``, when given, receives the first domain's five models by row name (the serve section uses them).
    """
    console = console or Console()
    started = time.perf_counter()
    base = CausalLMHandle.from_source(settings.teacher, max_length=settings.window)
    domains = bbc_news_lm_domains(seed=settings.seed, max_docs=settings.max_docs)
    if settings.domains is not None:
        domains = [d for d in domains if d.name in settings.domains]
    rows: list[dict[str, Any]] = []
    exports: dict[str, Any] = {}
    for domain in domains:
        console.print(f"[bold]lm derive[/] {domain.name}: LoRA teacher, cache, 2 students, scratch")
        train = [str(t) for t in domain.train.texts]
        validation = [str(t) for t in domain.validation.texts][: settings.max_validation]
        test = [str(t) for t in domain.test.texts][: settings.max_test]
        models = derive_models(base, train, validation, settings)
        if keep is not None and not keep:
            keep.update(models)
        for name, handle in models.items():
            ppl = perplexity(handle.model, handle.tokenizer, test, batch_size=4, max_length=settings.window)
            speed = tokens_per_second(handle, validation[0], settings.gen_tokens, settings.speed_repeats)
            rows.append(
                {
                    "domain": domain.name,
                    "model": name,
                    "params": param_count(handle.model),
                    "ppl": ppl,
                    "tokens_per_s": speed,
                }
            )
            console.print(f"  {domain.name} {name}: ppl {ppl:.2f}, {speed:.1f} tokens/s", highlight=False)
        if settings.exports and not exports:
            exports = {
                "domain": domain.name,
                "model": "student_05",
                **export_checks(models["student_05"], validation[:8], settings.gen_tokens),
            }
    seconds = time.perf_counter() - started
    return {
        "settings": settings.model_dump(mode="json"),
        "derive": rows,
        "exports": exports,
        "target": derive_targets(rows),
        "seconds": seconds,
    }


def derive_targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's derive bars, each taken at the worst domain (every domain must meet it)."""
    by = {(r["domain"], r["model"]): r for r in rows}
    domains = sorted({r["domain"] for r in rows})

    def worst(fn: Any, higher_is_better: bool) -> float:
        values = [fn(d) for d in domains]
        return min(values) if higher_is_better else max(values)

    ppl = lambda d, m: by[(d, m)]["ppl"]
    values = {
        "student_05_vs_domain_teacher": (
            worst(lambda d: ppl(d, "student_05") / ppl(d, "domain_teacher"), False),
            False,
        ),
        "student_025_vs_domain_teacher": (
            worst(lambda d: ppl(d, "student_025") / ppl(d, "domain_teacher"), False),
            False,
        ),
        "scratch_vs_student_05": (worst(lambda d: ppl(d, "scratch_05") / ppl(d, "student_05"), True), True),
        "scratch_vs_student_025": (worst(lambda d: ppl(d, "scratch_05") / ppl(d, "student_025"), True), True),
        "student_speedup": (
            worst(lambda d: by[(d, "student_05")]["tokens_per_s"] / by[(d, "teacher")]["tokens_per_s"], True),
            True,
        ),
    }
    return {
        name: {
            "value": value,
            "bar": BARS[name],
            "met": value >= BARS[name] if higher else value <= BARS[name],
        }
        for name, (value, higher) in values.items()
    }


def print_derive_rows(result: dict[str, Any], console: Console) -> None:
    """The rows, then the targets."""
    table = Table(title="causal LM derive: SmolLM2-135M per BBC domain (test perplexity, lower is better)")
    for column in ("domain", "model", "params (M)", "ppl", "tokens/s"):
        table.add_column(column, justify="left" if column in ("domain", "model") else "right")
    for row in result["derive"]:
        table.add_row(
            row["domain"],
            row["model"],
            f"{row['params'] / 1e6:.1f}",
            f"{row['ppl']:.2f}",
            f"{row['tokens_per_s']:.1f}",
        )
    console.print(table)
    for name, target in result["target"].items():
        mark = "[green]met[/]" if target["met"] else "[red]not met[/]"
        console.print(f"  {name}: {target['value']:.3f} (bar {target['bar']}) {mark}")


def run_lm_bench(quick: bool, console: Console) -> dict[str, Any]:
    """``fanbu bench derive --lm``'s ``lm`` section: :func:`run_lm_derive` with the quick or full preset."""
    return run_lm_derive(lm_derive_settings(quick), console)


def print_lm_table(lm: dict[str, Any], console: Console) -> None:
    """``fanbu bench derive --lm``'s table (the derive rows and targets)."""
    print_derive_rows(lm, console)
