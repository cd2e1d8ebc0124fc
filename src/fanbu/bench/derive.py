"""``fanbu bench derive``: students derived per 20 Newsgroups domain against their teachers and baselines.

The run derives with the real pipeline (finetune -> prune -> distill -> quantize, every stage in a
registry under the bench's home), then scores per domain on the test split: the teacher (MiniLM-L6
fine-tuned on the domain's private slice, fp32 PyTorch), the deployed int8 student (onnxruntime), a
student of the same shape trained from scratch on the same data with the same budget, and TF-IDF +
logistic regression trained on the same private data; and CPU speed at batch 1 and batch 32.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.baselines import scratch_accuracy, tfidf_accuracy
from fanbu.bench.lm import print_lm_table, run_lm_bench
from fanbu.derive.data import DeriveData, load_domain_data
from fanbu.derive.distill import DistillConfig
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.derive.presets import BENCH_DERIVE_PRUNE, QUANTIZE_DEPLOY
from fanbu.evaluate.metrics import accuracy
from fanbu.evaluate.speed import measure_latency, measure_throughput, param_count
from fanbu.io import atomic_write_json
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace

TEACHER = "package:all-MiniLM-L6-v2"


def bench_recipe(quick: bool) -> DeriveRecipe:
    """The derive recipe the bench runs (quick: capped data, same shapes).

    Teacher and students read 256 tokens of each post, its first and last 127 (most posts fit whole;
    long ones keep their conclusion and signature), which is what lets them beat TF-IDF over the whole
    text. Batches group texts of similar length, so short posts cost little.
    """
    common = {"batch_size": 16, "warmup_ratio": 0.06, "group_by_length": True}
    teacher_train = {**common, "epochs": 2 if quick else 3, "lr": 1e-4}
    student_train = {**common, "epochs": 3 if quick else 6, "lr": 5e-4}
    data = DeriveData(max_train=600 if quick else None, max_validation=100 if quick else 300,
                      max_test=400 if quick else None, transfer="public", max_transfer=600 if quick else None)
    return DeriveRecipe(
        teacher=TEACHER,
        max_length=256,
        truncation="head_tail",
        data=data,
        stages=[
            {"finetune": {"mode": "full", "train": teacher_train}},
            {"prune": dict(BENCH_DERIVE_PRUNE)},
            {"distill": {"temperature": 2.0, "alpha": 0.8, "hidden_weight": 1.0, "train": student_train}},
            copy.deepcopy(QUANTIZE_DEPLOY),
        ],
    )


def _predictor(handle_or_deploy: Any, head: str, batch_size: int):
    return lambda texts: handle_or_deploy.predict(list(texts), head, batch_size=batch_size)


def _speed(predictor: Any, head: str, texts: list[str], iterations: int) -> tuple[float, float]:
    b1 = measure_latency(_predictor(predictor, head, 1), texts, batch_size=1, iterations=iterations).p50_ms
    b32 = measure_throughput(_predictor(predictor, head, 32), texts, batch_size=32, iterations=3)
    return b1, b32


def bench_domain(
    workspace: Workspace, recipe: DeriveRecipe, name: str, iterations: int
) -> dict[str, float | str]:
    """Every number of one domain's row (the latest finetune, distill and quantize models of ``name``)."""
    data = load_domain_data(recipe.data, name)
    teacher = workspace.load_encoder(f"{name}.finetune")
    student_fp32 = workspace.load_encoder(f"{name}.distill")
    student = workspace.load(f"{name}.quantize", runtime="onnx_int8")
    texts, labels = data.test
    teacher_acc = accuracy(teacher.predict(texts, name, batch_size=64), labels)
    student_acc = accuracy(student.predict(texts, name, batch_size=64), labels)
    speed_texts = texts[:64]
    teacher_b1, teacher_b32 = _speed(teacher, name, speed_texts, iterations)
    student_b1, student_b32 = _speed(student, name, speed_texts, iterations)
    distill_cfg = next(DistillConfig(**s["distill"]) for s in recipe.stages if "distill" in s)
    scratch = scratch_accuracy(student_fp32, name, data.train, data.validation, data.test, distill_cfg.train)
    return {
        "name": name,
        "teacher_acc": teacher_acc,
        "student_acc": student_acc,
        "retention": student_acc / teacher_acc if teacher_acc else 0.0,
        "param_ratio": param_count(student_fp32.model) / param_count(teacher.model),
        "speedup_b1": teacher_b1 / student_b1,
        "speedup_b32": student_b32 / teacher_b32,
        "scratch_acc": scratch,
        "tfidf_acc": tfidf_accuracy(data.train, data.test),
        "n_test": len(labels),
        "teacher_b1_ms": teacher_b1,
        "student_b1_ms": student_b1,
    }


def run_bench(quick: bool, out: Path, console: Console, home: Path | None = None,
              domains: list[str] | None = None, lm: bool = False) -> dict[str, Any]:
    """Run the derive bench, print its table and write its JSON to ``out`` (``lm``: the causal-LM part too)."""
    started = time.perf_counter()
    recipe = bench_recipe(quick)
    if domains:
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"domains": domains})})
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-") as tmp:
        registry = Registry.open(home or Path(tmp))
        try:
            results = run_derive(recipe, registry)
            workspace = Workspace(registry)
            rows = [bench_domain(workspace, recipe, r["domain"], 20 if quick else 50) for r in results]
        finally:
            registry.close()
    keys = ("retention", "param_ratio", "speedup_b1", "speedup_b32", "student_acc", "teacher_acc",
            "scratch_acc", "tfidf_acc")
    report = {
        "bench": "derive",
        "quick": quick,
        "command": f"fanbu bench derive{' --quick' if quick else ''}{' --lm' if lm else ''} --out {out}",
        "domains": rows,
        "mean": {k: statistics.fmean(float(r[k]) for r in rows) for k in keys},
        "seconds": time.perf_counter() - started,
        "recipe": recipe.model_dump(mode="json"),
    }
    if lm:
        lm_started = time.perf_counter()
        report["lm"] = run_lm_bench(quick, console)
        report["lm"]["seconds"] = time.perf_counter() - lm_started
        report["seconds"] = time.perf_counter() - started
    atomic_write_json(out, report)
    print_table(report, console)
    if lm:
        print_lm_table(report["lm"], console)
    return report


def print_table(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"fanbu bench derive{' --quick' if report['quick'] else ''} ({report['seconds']:.0f} s)")
    columns = ("teacher_acc", "student_acc", "retention", "param_ratio", "speedup_b1", "speedup_b32",
               "scratch_acc", "tfidf_acc")
    table.add_column("domain")
    for column in columns:
        table.add_column(column, justify="right")
    for row in report["domains"]:
        table.add_row(row["name"], *(f"{row[c]:.3f}" for c in columns))
    mean = report["mean"]
    table.add_row("mean", *(f"{mean[c]:.3f}" for c in columns), style="bold")
    console.print(table)
