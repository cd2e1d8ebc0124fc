"""``fanbu bench derive --lm``: SmolLM2-135M pruned to a third of its layers and distilled per BBC domain.

Per BBC News category: the teacher (the packaged SmolLM2-135M-Instruct, 30 layers), a student pruned
from it to ``layers`` layers and distilled on the category's training text, and a student of exactly
the same shape initialised at random and trained on the same text for the same number of steps (the
next-token loss alone, since there is no teacher knowledge to use). All three are scored by perplexity on
the category's test articles, which no model trained on.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from pydantic import Field
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from fanbu.config import Strict
from fanbu.data.builtin import bbc_news_lm_domains
from fanbu.derive.distill import LMDistillConfig, distill_causal_lm
from fanbu.derive.prune import Calibration, PruneConfig, prune_causal_lm
from fanbu.evaluate.metrics import perplexity
from fanbu.evaluate.speed import param_count
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.config import TrainConfig

LM_TEACHER = "package:SmolLM2-135M-Instruct"


class LMBenchSettings(Strict):
    """The causal-LM part of the derive bench."""

    teacher: str = Field(LM_TEACHER, description="The causal LM to derive from.")
    layers: int = Field(10, ge=1, description="Layers the student keeps (SmolLM2 has 30: a third).")
    importance: str = Field("taylor", description="How layers are scored before dropping (see PruneConfig).")
    max_length: int = Field(128, ge=16, description="Tokens per training window and per scored window.")
    max_docs: int | None = Field(None, ge=10, description="Cap on articles per category (before splitting).")
    max_test: int = Field(60, ge=1, description="Test articles scored per category.")
    steps: int = Field(60, ge=1, description="Optimiser steps of the distilled and of the scratch student.")
    batch_size: int = Field(8, ge=1, description="Texts per step.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate of both students.")
    scratch_lr: float = Field(1e-3, gt=0, description="Peak learning rate of the scratch student.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the per-token KL (the LM loss gets 1 - alpha).")
    seed: int = Field(0)


def lm_settings(quick: bool) -> LMBenchSettings:
    return LMBenchSettings(max_docs=100, max_test=20, steps=16, batch_size=4) if quick else LMBenchSettings()


def _train(steps: int, batch_size: int, lr: float, seed: int) -> TrainConfig:
    return TrainConfig(epochs=1000, max_steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.1,
                       seed=seed, metric="score", mode="max", progress=False, group_by_length=True)


def scratch_like(student: CausalLMHandle, seed: int) -> CausalLMHandle:
    """A randomly initialised causal LM of the student's exact configuration and tokenizer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(copy.deepcopy(student.model.config))
    return CausalLMHandle(model, student.tokenizer, student.max_length)


def bench_lm_domain(teacher: CausalLMHandle, domain: Any, settings: LMBenchSettings) -> dict[str, Any]:
    """Teacher, distilled student and scratch student perplexity on one category's test articles."""
    started = time.perf_counter()
    train = list(domain.train.texts)
    test = list(domain.test.texts[: settings.max_test])
    calibration = Calibration(train[:32], batch_size=4, max_batches=8)
    prune = PruneConfig(layers=settings.layers, importance=settings.importance)
    student = prune_causal_lm(teacher, prune, calibration)
    config = LMDistillConfig(alpha=settings.alpha, train=_train(settings.steps, settings.batch_size, settings.lr,
                                                                 settings.seed))
    distill_causal_lm(student, teacher, train, config)
    scratch = scratch_like(student, settings.seed)
    scratch_config = LMDistillConfig(alpha=0.0, train=_train(settings.steps, settings.batch_size,
                                                             settings.scratch_lr, settings.seed))
    distill_causal_lm(scratch, teacher, train, scratch_config)  # alpha 0: the next-token loss alone

    def ppl(handle: CausalLMHandle) -> float:
        return perplexity(handle.model, handle.tokenizer, test, batch_size=4, max_length=settings.max_length)

    return {
        "name": domain.name,
        "teacher_ppl": ppl(teacher),
        "student_ppl": ppl(student),
        "scratch_ppl": ppl(scratch),
        "param_ratio": param_count(student.model) / param_count(teacher.model),
        "layers": student.model.config.num_hidden_layers,
        "teacher_layers": teacher.model.config.num_hidden_layers,
        "n_train": len(train),
        "n_test": len(test),
        "seconds": time.perf_counter() - started,
    }


def run_lm_bench(quick: bool, console: Console) -> dict[str, Any]:
    """The ``lm`` section of the derive bench's JSON."""
    settings = lm_settings(quick)
    teacher = CausalLMHandle.from_source(settings.teacher, max_length=settings.max_length)
    rows = []
    for domain in bbc_news_lm_domains(seed=settings.seed, max_docs=settings.max_docs):
        console.print(f"[bold]lm[/] {domain.name}: prune to {settings.layers} layers, distil, train from scratch")
        rows.append(bench_lm_domain(teacher, domain, settings))
    keys = ("teacher_ppl", "student_ppl", "scratch_ppl", "param_ratio")
    return {
        "settings": settings.model_dump(mode="json"),
        "domains": rows,
        "mean": {k: statistics.fmean(r[k] for r in rows) for k in keys},
        "student_beats_scratch": all(r["student_ppl"] < r["scratch_ppl"] for r in rows),
    }


def print_lm_table(lm: dict[str, Any], console: Console) -> None:
    table = Table(title="causal LM: SmolLM2-135M -> pruned + distilled student (perplexity, lower is better)")
    columns = ("teacher_ppl", "student_ppl", "scratch_ppl", "param_ratio")
    table.add_column("domain")
    for column in columns:
        table.add_column(column, justify="right")
    for row in lm["domains"]:
        table.add_row(row["name"], *(f"{row[c]:.3f}" for c in columns))
    table.add_row("mean", *(f"{lm['mean'][c]:.3f}" for c in columns), style="bold")
    console.print(table)
