"""``fanbu bench lm``, feedback rows: feed BBC domain LMs back into SmolLM2 and measure PGR and forgetting.

v0 is the packaged SmolLM2-135M-Instruct. Each BBC domain's teacher is v0 with a LoRA adapter tuned on
the domain's private slice. The feedback methods see only the public slices (transfer text), the
validation parts and replayed Reuters text: each LoRA merge method (task arithmetic, TIES, DARE-TIES;
lambda chosen on validation), multi-teacher token distillation, and the naive sequential baseline with
the same transfer texts and the same total steps as distillation.

Per method, on each domain's **test** split (scored once, for the report):
``PGR = (log ppl v0 - log ppl method) / (log ppl v0 - log ppl teacher)``, averaged over domains, and the
relative change of perplexity on held-out general text (20 Newsgroups test posts, never used in
feedback). Every candidate also goes through the LM gate (domain gate splits, 20 Newsgroups validation
posts, the instruction prompts): the **best** method is the one with the lowest mean domain gate
log-perplexity among those the gate passes (all, if none passes), so that no choice reads a test split.
Texts are cut to their first ``max_chars`` characters, about one window of ``max_length`` tokens.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from fanbu.config import Strict
from fanbu.derive.finetune import FinetuneConfig, LoraSettings, finetune_causal_lm
from fanbu.evaluate.metrics import perplexity
from fanbu.feedback.gate.lm_gate import LMGateConfig, LMGateData, lm_gate, load_prompts, score_lm
from fanbu.feedback.lm import LM_METHODS, LMFeedbackContext
from fanbu.feedback.lm.data import load_lm_slices
from fanbu.feedback.lm.pipeline import log_pgr
from fanbu.feedback.lm.recipe import LMData
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.config import TrainConfig

LM_TEACHER = "package:SmolLM2-135M-Instruct"
PGR_BAR = 0.7
HELDOUT_BAR = 0.02


class LMFeedbackBenchSettings(Strict):
    """The feedback section of ``fanbu bench lm``."""

    large: str = Field(LM_TEACHER, description="v0, the large LM fed back into.")
    domains: list[str] = Field(
        default_factory=lambda: ["bbc-business", "bbc-sports", "bbc-tech"],
        description="BBC domains fed back.",
    )
    max_docs: int = Field(100, ge=20, description="Articles per category before splitting.")
    public_fraction: float = Field(
        0.3, gt=0, lt=1, description="Share of each train split that is transfer text."
    )
    max_length: int = Field(128, ge=16, description="Tokens per window.")
    max_chars: int = Field(700, ge=50, description="Every text is cut to its first this many characters.")
    max_test: int = Field(20, ge=1, description="Test articles per domain (the report's).")
    max_heldout: int = Field(40, ge=1, description="20 Newsgroups posts for the gate and, apart, the report.")
    max_general: int = Field(100, ge=1, description="Reuters texts replayed against forgetting.")
    expert_steps: int = Field(60, ge=1, description="LoRA steps of each domain teacher on its private slice.")
    feedback_steps: int = Field(
        60, ge=1, description="Steps of distillation; sequential gets the same in total."
    )
    batch_size: int = Field(4, ge=1, description="Texts per step.")
    expert_lr: float = Field(1e-3, gt=0, description="Learning rate of the domain teachers.")
    feedback_lr: float = Field(5e-4, gt=0, description="Learning rate of distillation and sequential.")
    lora_r: int = Field(16, ge=1, description="LoRA rank of teachers and trained candidates.")
    merge_methods: list[str] = Field(
        default_factory=lambda: ["task_arithmetic", "ties", "dare_ties"],
        description="lm_merge methods, one row each.",
    )
    scalings: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 1.5], description="Merge lambdas tried (chosen on validation)."
    )
    replay: float = Field(0.5, ge=0, description="Weight of replayed general text in distillation.")
    seed: int = Field(0, description="Seeds splits, training and DARE.")


def feedback_settings(quick: bool) -> LMFeedbackBenchSettings:
    """Quick: 2 domains, 60 articles each, 64-token windows, 16 steps (about 10 minutes on 2 idle cores)."""
    if not quick:
        return LMFeedbackBenchSettings()
    return LMFeedbackBenchSettings(
        domains=["bbc-sports", "bbc-tech"],
        max_docs=60,
        max_length=64,
        max_chars=350,
        max_test=10,
        max_heldout=12,
        max_general=32,
        expert_steps=16,
        feedback_steps=16,
        scalings=[0.5, 1.0],
    )


def _train(steps: int, lr: float, settings: LMFeedbackBenchSettings) -> TrainConfig:
    return TrainConfig(
        epochs=1000,
        max_steps=steps,
        batch_size=settings.batch_size,
        lr=lr,
        warmup_ratio=0.1,
        seed=settings.seed,
        progress=False,
        group_by_length=True,
    )


def _lora(settings: LMFeedbackBenchSettings, merge: bool) -> LoraSettings:
    return LoraSettings(r=settings.lora_r, alpha=2 * settings.lora_r, dropout=0.0, merge=merge)


def _cut(texts: list[str], chars: int) -> list[str]:
    return [t[:chars].rsplit(" ", 1)[0] if len(t) > chars else t for t in texts]


def method_rows(settings: LMFeedbackBenchSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(row name, strategy, its settings) of every feedback row."""
    trained = {
        "mode": "lora",
        "lora": _lora(settings, True).model_dump(),
        "train": _train(settings.feedback_steps, settings.feedback_lr, settings).model_dump(),
    }
    per_domain = max(1, settings.feedback_steps // len(settings.domains))
    sequential = {**trained, "train": _train(per_domain, settings.feedback_lr, settings).model_dump()}
    rows = [
        (
            f"merge:{m}",
            "lm_merge",
            {
                "method": m,
                "scalings": settings.scalings,
                **({"normalize": False} if m == "task_arithmetic" else {}),
            },
        )
        for m in settings.merge_methods
    ]
    rows.append(
        ("multi-teacher KD", "lm_distill", {"routing": "domain", "replay": settings.replay, **trained})
    )
    rows.append(("sequential (baseline)", "lm_sequential", sequential))
    return rows


def run_lm_feedback_bench(
    quick: bool, console: Console, settings: LMFeedbackBenchSettings | None = None
) -> dict[str, Any]:
    """The ``feedback`` section of ``fanbu bench lm``'s JSON (``settings``: instead of the preset)."""
    started = time.perf_counter()
    settings = settings or feedback_settings(quick)
    data = LMData(
        domains=settings.domains,
        max_docs=settings.max_docs,
        public_fraction=settings.public_fraction,
        max_test=settings.max_test,
        max_heldout=settings.max_heldout,
        max_general=settings.max_general,
        seed=settings.seed,
    )
    slices = load_lm_slices(data)
    for role in ("public", "private", "validation", "gate", "test"):
        setattr(slices, role, {d: _cut(t, settings.max_chars) for d, t in getattr(slices, role).items()})
    held = slices.heldout_name
    heldout_gate, heldout_test = (
        _cut(slices.heldout_gate, settings.max_chars),
        _cut(slices.heldout_test, settings.max_chars),
    )
    large = CausalLMHandle.from_source(settings.large, max_length=settings.max_length)
    large.model.eval()
    gate_config = LMGateConfig(tolerance=HELDOUT_BAR, batch_size=settings.batch_size)
    gate_data = LMGateData(slices.gate, {held: heldout_gate}, load_prompts())
    report_data = LMGateData(slices.test, {held: heldout_test})
    champion_gate = score_lm(large, gate_data, gate_config)
    v0 = score_lm(large, report_data, gate_config)
    teachers, teacher_ppl = {}, {}
    expert_config = FinetuneConfig(
        mode="lora",
        lora=_lora(settings, False),
        train=_train(settings.expert_steps, settings.expert_lr, settings),
    )
    for domain in settings.domains:
        console.print(
            f"[bold]lm feedback[/] {domain}: LoRA teacher on {len(slices.private[domain])} private articles"
        )
        teacher, _ = finetune_causal_lm(copy.deepcopy(large), slices.private[domain], expert_config)
        teacher.model.eval()
        teachers[domain] = teacher
        teacher_ppl[domain] = perplexity(
            teacher.model, teacher.tokenizer, slices.test[domain], settings.batch_size, settings.max_length
        )
    ctx = LMFeedbackContext(
        large,
        teachers,
        slices.public,
        slices.validation,
        _cut(slices.general, settings.max_chars),
        [],
        seed=settings.seed,
        batch_size=settings.batch_size,
    )
    rows = []
    for row_name, strategy, raw in method_rows(settings):
        console.print(f"[bold]lm feedback[/] {row_name}")
        began = time.perf_counter()
        entry = LM_METHODS.get(strategy)
        out = entry.run(ctx, entry.config.model_validate(raw))
        seconds = time.perf_counter() - began
        decision = lm_gate(out.handle, large, gate_data, gate_config, champion_gate)
        report = score_lm(out.handle, report_data, gate_config)
        pgr = {d: log_pgr(v0[d]["ppl"], report[d]["ppl"], teacher_ppl[d]) for d in settings.domains}
        known = [p for p in pgr.values() if p is not None]
        rows.append(
            {
                "method": row_name,
                "strategy": strategy,
                "pgr": statistics.fmean(known) if known else None,
                "pgr_by_domain": pgr,
                "ppl": {d: report[d]["ppl"] for d in settings.domains},
                "heldout_ppl_change": report[held]["ppl"] / v0[held]["ppl"] - 1,
                "gate_passed": decision.promoted,
                "gate_reason": decision.reason,
                "gate_mean_log_ppl": -decision.candidate_mean,
                "details": out.details,
                "seconds": seconds,
            }
        )
        del out
    passed = [r for r in rows if r["gate_passed"]] or rows
    best = min(passed, key=lambda r: r["gate_mean_log_ppl"])
    return {
        "settings": settings.model_dump(mode="json"),
        "heldout": f"{held} (test posts; gate: validation posts)",
        "v0": {t: v["ppl"] for t, v in v0.items()},
        "teachers": teacher_ppl,
        "feedback": rows,
        "best": best["method"],
        "best_chosen_on": "gate split (lowest mean domain gate log-perplexity among methods the gate passes)",
        "target": {
            "feedback_best_pgr": {
                "value": best["pgr"],
                "bar": PGR_BAR,
                "met": best["pgr"] is not None and best["pgr"] >= PGR_BAR,
            },
            "feedback_best_heldout_ppl_change": {
                "value": best["heldout_ppl_change"],
                "bar": HELDOUT_BAR,
                "met": best["heldout_ppl_change"] <= HELDOUT_BAR,
            },
        },
        "seconds": time.perf_counter() - started,
    }


def print_lm_feedback_table(section: dict[str, Any], console: Console) -> None:
    """One row per method: PGR (log-perplexity, test), held-out perplexity change, gate verdict."""
    domains = section["settings"]["domains"]
    table = Table(title=f"causal LM feedback into SmolLM2-135M (best by gate: {section['best']})")
    for column in ("method", "PGR", *domains, "held-out ppl", "gate", "seconds"):
        table.add_column(column, justify="left" if column in ("method", "gate") else "right")
    table.add_row("v0 (base)", "0", *(f"{section['v0'][d]:.2f}" for d in domains), "+0.0%", "-", "-")
    table.add_row("domain teachers", "1", *(f"{section['teachers'][d]:.2f}" for d in domains), "-", "-", "-")
    for row in section["feedback"]:
        pgr = "-" if row["pgr"] is None else f"{row['pgr']:.3f}"
        table.add_row(
            row["method"],
            pgr,
            *(f"{row['ppl'][d]:.2f}" for d in domains),
            f"{100 * row['heldout_ppl_change']:+.1f}%",
            "pass" if row["gate_passed"] else "reject",
            f"{row['seconds']:.0f}",
        )
    console.print(table)
    for name, target in section["target"].items():
        value = target["value"]
        shown = "-" if value is None else f"{value:.3f}"
        console.print(f"{name}: {shown} (bar {target['bar']}) {'met' if target['met'] else 'NOT met'}")
    console.print(f"feedback section: {section['seconds']:.0f} s")
