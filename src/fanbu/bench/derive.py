"""``fanbu bench derive``: students derived per 20 Newsgroups domain against their teachers and baselines.

The run derives with the real pipeline (finetune -> prune -> distill -> quantize, every stage in a
registry under the bench's home), then scores per domain on the test split: the teacher (MiniLM-L6
fine-tuned on the domain's private slice, fp32 PyTorch), the deployed int8 student (onnxruntime), a
student of the same shape trained from scratch, and TF-IDF + logistic regression trained on the same
private data; and CPU speed at batch 1 and batch 32.

What the scratch student gets (:data:`SCRATCH_LEGEND`): everything the distilled student gets except
the teacher. The distilled student trains on the labelled private slice plus the transfer texts (the
teacher's soft labels only) for ``ceil(examples / batch_size) * epochs`` optimiser steps. The scratch
student, randomly initialised in the same shape, gets the same labelled data, validation split,
transfer texts, loop settings and exactly that many optimiser steps: it trains on the labelled data for
the distil settings' epochs, labels every transfer text with its own argmax, keeps those at least as
confident as a threshold chosen on the validation split (never the test split), and trains on labelled
+ pseudo-labelled texts for the remaining steps (:func:`fanbu.bench.baselines.self_train_scratch`).

``--seeds N`` runs the whole bench (data split, training, pruning calibration) for seeds 0..N-1 on the
same test split; every headline figure is the mean over seeds of the mean over domains, with a 90%
t-interval over seeds beside it (:data:`INTERVAL_LEGEND`). Each target (:func:`targets`) counts as met
on that mean; a target the bench does not reach is reported short.
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

from fanbu.bench.baselines import planned_steps, self_train_scratch, tfidf_accuracy
from fanbu.bench.lm.derive import print_lm_table, run_lm_bench
from fanbu.bench.stats import INTERVAL_LEVEL, seed_interval
from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.derive.data import DeriveData, load_domain_data
from fanbu.derive.distill import DistillConfig
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.derive.presets import BENCH_DERIVE_PRUNE, QUANTIZE_DEPLOY
from fanbu.derive.stages import parse_stages
from fanbu.evaluate.metrics import accuracy
from fanbu.evaluate.speed import measure_latency, measure_throughput, param_count
from fanbu.io import atomic_write_json
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace

TEACHER = "package:all-MiniLM-L6-v2"
TARGET_RETENTION = 0.98  # the int8 students keep this share of their teachers' accuracy (mean of domains)
TARGET_PARAM_RATIO = 0.15  # student parameters / teacher parameters, at most
TARGET_SPEEDUP_B1 = 10.0  # int8 student vs fp32 teacher, batch-1 latency speed-up, at least
# every number of a domain's row that is averaged over domains, and over seeds, as a headline figure
HEADLINE = ("retention", "param_ratio", "speedup_b1", "speedup_b32", "student_acc", "teacher_acc",
            "scratch_acc", "tfidf_acc", "student_minus_scratch", "student_minus_tfidf")
COLUMNS = ("teacher_acc", "student_acc", "retention", "param_ratio", "speedup_b1", "speedup_b32",
           "scratch_acc", "tfidf_acc")
SCRATCH_LEGEND = (
    "scratch: the student's shape, randomly initialised, with everything the distilled student gets but "
    "the teacher: the same labelled private data, validation split, transfer texts, loop settings and "
    "number of optimiser steps (the distil loop's on labelled + transfer texts). It trains on the labelled "
    "data for the distil epochs, labels every transfer text with its own argmax, keeps those at least as "
    "confident as the threshold that maximises right minus wrong predictions on the validation split, then "
    "trains on labelled + pseudo-labelled texts for the remaining steps (its last weights, unless the first "
    "phase's scored higher on validation). The test split is only scored."
)
INTERVAL_LEGEND = (
    "\\[brackets]: 90% t-interval over seeds (mean +- t(0.95, n-1) * sd / sqrt(n)) of the mean over domains; "
    "a target is met on the mean"
)


def bench_recipe(quick: bool) -> DeriveRecipe:
    """The derive recipe the bench runs (quick: capped data, same shapes; full: the whole private slices).

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


def with_seed(recipe: DeriveRecipe, seed: int) -> DeriveRecipe:
    """``recipe`` with ``seed`` for its data split (and pruning calibration) and every stage's training."""
    stages = copy.deepcopy(recipe.stages)
    for stage in stages:
        for settings in stage.values():
            if isinstance(settings, dict) and isinstance(settings.get("train"), dict):
                settings["train"]["seed"] = seed
    data = recipe.data.model_copy(update={"seed": seed})
    return DeriveRecipe.model_validate({**recipe.model_dump(), "data": data.model_dump(), "stages": stages})


def distill_config(recipe: DeriveRecipe) -> DistillConfig:
    """The recipe's distill stage settings."""
    return next(config for name, config in parse_stages(recipe.stages) if name == "distill")


def _predictor(handle_or_deploy: Any, head: str, batch_size: int):
    return lambda texts: handle_or_deploy.predict(list(texts), head, batch_size=batch_size)


def _speed(predictor: Any, head: str, texts: list[str], iterations: int) -> tuple[float, float]:
    b1 = measure_latency(_predictor(predictor, head, 1), texts, batch_size=1, iterations=iterations).p50_ms
    b32 = measure_throughput(_predictor(predictor, head, 32), texts, batch_size=32, iterations=3)
    return b1, b32


def bench_domain(
    workspace: Workspace, recipe: DeriveRecipe, result: dict[str, Any], iterations: int
) -> dict[str, Any]:
    """Every number of one domain's row; ``result`` is the domain's entry of :func:`run_derive`'s list
    (its models, in the order of the recipe's stages)."""
    name = result["domain"]
    made = dict(zip((stage for stage, _ in parse_stages(recipe.stages)), result["models"], strict=True))
    data = load_domain_data(recipe.data, name)
    teacher = workspace.load_encoder(made["finetune"])
    student_fp32 = workspace.load_encoder(made["distill"])
    student = workspace.load(made["quantize"], runtime="onnx_int8")
    texts, labels = data.test
    teacher_acc = accuracy(teacher.predict(texts, name, batch_size=64), labels)
    student_acc = accuracy(student.predict(texts, name, batch_size=64), labels)
    speed_texts = texts[:64]
    teacher_b1, teacher_b32 = _speed(teacher, name, speed_texts, iterations)
    student_b1, student_b32 = _speed(student, name, speed_texts, iterations)
    train = distill_config(recipe).train
    scratch = self_train_scratch(
        student_fp32, name, data.train, data.validation, data.test, data.transfer, train
    )
    tfidf = tfidf_accuracy(data.train, data.test)
    return {
        "name": name,
        "teacher_acc": teacher_acc,
        "student_acc": student_acc,
        "retention": student_acc / teacher_acc if teacher_acc else 0.0,
        "param_ratio": param_count(student_fp32.model) / param_count(teacher.model),
        "speedup_b1": teacher_b1 / student_b1,
        "speedup_b32": student_b32 / teacher_b32,
        "scratch_acc": scratch.accuracy,
        "tfidf_acc": tfidf,
        "student_minus_scratch": student_acc - scratch.accuracy,
        "student_minus_tfidf": student_acc - tfidf,
        "n_train": len(data.train[0]),
        "n_transfer": len(data.transfer),
        "n_test": len(labels),
        # the distilled student's optimiser steps: its loop settings on labelled + transfer texts
        "distill_steps": planned_steps(len(data.train[0]) + len(data.transfer), train),
        "scratch": scratch.as_dict(),
        "teacher_b1_ms": teacher_b1,
        "student_b1_ms": student_b1,
    }


def summarise(runs: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, list[float] | None]]:
    """Mean over seeds and 90% t-interval of each headline figure (each seed's mean over domains)."""
    mean = {k: statistics.fmean(run["mean"][k] for run in runs) for k in HEADLINE}
    interval = {k: seed_interval([run["mean"][k] for run in runs]) for k in HEADLINE}
    return mean, interval


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def domain_means(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each domain's row averaged over seeds (its numbers; every seed's full row stays in ``runs``)."""
    out = []
    for index, first in enumerate(runs[0]["domains"]):
        rows = [run["domains"][index] for run in runs]
        row: dict[str, Any] = {"name": first["name"]}
        for key, value in first.items():
            if _number(value) and all(_number(r.get(key)) for r in rows):
                row[key] = statistics.fmean(float(r[key]) for r in rows)
        out.append(row)
    return out


def targets(mean: dict[str, float], interval: dict[str, list[float] | None]) -> dict[str, dict[str, Any]]:
    """The bench's targets, each ``{value, bar, met, interval, rule}``, met (or not) on the mean.

    * ``retention``: the int8 students keep at least 0.98 of their teachers' accuracy (mean of domains).
    * ``param_ratio``: the students have at most 0.15 of their teachers' parameters.
    * ``speedup_b1``: the int8 student answers one text at least 10 times faster than the teacher.
    * ``beats_scratch``: the distilled student's accuracy minus the scratch student's is above 0.
    * ``beats_tfidf``: the distilled student's accuracy minus TF-IDF + logistic regression's is above 0.
    """

    def target(key: str, bar: float, strict: bool, rule: str, below: bool = False) -> dict[str, Any]:
        value = mean[key]
        met = (value < bar if strict else value <= bar) if below else (value > bar if strict else value >= bar)
        return {"value": value, "bar": bar, "met": met, "interval": interval[key], "rule": rule}

    return {
        "retention": target("retention", TARGET_RETENTION, False,
                            "int8 student acc / teacher acc, mean of domains, >= bar"),
        "param_ratio": target("param_ratio", TARGET_PARAM_RATIO, False,
                              "student params / teacher params, mean of domains, <= bar", below=True),
        "speedup_b1": target("speedup_b1", TARGET_SPEEDUP_B1, False,
                             "teacher p50 / int8 student p50 at batch 1, mean of domains, >= bar"),
        "beats_scratch": target("student_minus_scratch", 0.0, True,
                                "int8 student acc - scratch (self-trained) acc, mean of domains, > bar"),
        "beats_tfidf": target("student_minus_tfidf", 0.0, True,
                              "int8 student acc - TF-IDF + logistic regression acc, mean of domains, > bar"),
    }


def run_bench(quick: bool, out: Path, console: Console, home: Path | None = None,
              domains: list[str] | None = None, lm: bool = False, seeds: int = 1,
              work: Path | None = None) -> dict[str, Any]:
    """Run the derive bench for seeds 0..``seeds``-1, print its table and write its JSON to ``out``
    (``lm``: the causal-LM part too).

    ``work`` keeps each finished seed (its rows, fingerprinted with the recipe and fanbu's code), so a
    stopped run starts again at the first seed it had not finished.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    started = time.perf_counter()
    base = bench_recipe(quick)
    if domains:
        base = base.model_copy(update={"data": base.data.model_copy(update={"domains": domains})})
    runs: list[dict[str, Any]] = []
    cap = 20 if quick else 50
    store = None if work is None else WorkDir(work, console)
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-") as tmp:
        registry = Registry.open(home or Path(tmp))
        try:
            workspace = Workspace(registry)
            for seed in range(seeds):
                recipe = with_seed(base, seed)

                def make(recipe: DeriveRecipe = recipe, seed: int = seed) -> dict[str, Any]:
                    seed_started = time.perf_counter()
                    results = run_derive(recipe, registry)
                    rows = [bench_domain(workspace, recipe, r, cap) for r in results]
                    return {
                        "seed": seed,
                        "domains": rows,
                        "mean": {k: statistics.fmean(float(r[k]) for r in rows) for k in HEADLINE},
                        "seconds": time.perf_counter() - seed_started,
                    }

                if store is None:
                    runs.append(make())
                    continue
                key = {"recipe": recipe.model_dump(mode="json"), "cap": cap, "code": source_fingerprint("fanbu")}
                run = store.result(f"derive-seed{seed}", make, key)
                run.pop("fingerprint", None)
                runs.append(run)
        finally:
            registry.close()
    mean, interval = summarise(runs)
    command = (f"fanbu bench derive{' --quick' if quick else ''}{f' --seeds {seeds}' if seeds != 1 else ''}"
               f"{' --lm' if lm else ''}{f' --work {work}' if work is not None else ''} --out {out}")
    report = {
        "bench": "derive",
        "quick": quick,
        "command": command,
        "seeds": [run["seed"] for run in runs],
        "domains": domain_means(runs),
        "mean": mean,
        "interval": interval,
        "interval_method": f"{INTERVAL_LEVEL:.0%} t-interval over seeds of each seed's mean over domains "
        "(null with one seed)",
        "target": targets(mean, interval),
        "scratch_baseline": SCRATCH_LEGEND,
        "runs": runs,
        "seconds": time.perf_counter() - started,
        "recipe": base.model_dump(mode="json"),
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


def _interval(span: list[float] | None) -> str:
    return "" if span is None else f"\\[{span[0]:.3f}, {span[1]:.3f}]"


def scratch_budget_lines(report: dict[str, Any]) -> list[str]:
    """Per domain of the first seed: the steps both students took and the transfer texts scratch kept."""
    lines = []
    for row in (report.get("runs") or [{}])[0].get("domains", []):
        s = row["scratch"]
        threshold = "none kept" if s["threshold"] is None else f"threshold {s['threshold']:.2f}"
        lines.append(
            f"  {row['name']}: distilled {row['distill_steps']} steps on {row['n_train']} labelled + "
            f"{row['n_transfer']} transfer texts; scratch {s['steps']} = {s['labelled_steps']} labelled + "
            f"{s['self_training_steps']} self-training steps, {s['pseudo_labelled']} of {s['transfer_texts']} "
            f"transfer texts pseudo-labelled ({threshold}), {s['kept'].replace('_', '-')} weights kept"
        )
    return lines


def print_table(report: dict[str, Any], console: Console) -> None:
    """One row per domain (means over seeds), the mean, its interval, then the targets and the legend."""
    seeds = report.get("seeds", [0])
    table = Table(
        title=f"fanbu bench derive{' --quick' if report['quick'] else ''}"
        f"{f' ({len(seeds)} seeds)' if len(seeds) != 1 else ''} ({report['seconds']:.0f} s)"
    )
    table.add_column("domain")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for row in report["domains"]:
        table.add_row(row["name"], *(f"{row[c]:.3f}" for c in COLUMNS))
    mean = report["mean"]
    table.add_row("mean", *(f"{mean[c]:.3f}" for c in COLUMNS), style="bold")
    spans = report.get("interval") or {}
    if any(spans.get(c) for c in COLUMNS):  # a t-interval is symmetric: the mean +- its half-width
        table.add_row("90% +-", *("" if spans.get(c) is None else f"+-{(spans[c][1] - spans[c][0]) / 2:.3f}"
                                  for c in COLUMNS))
    console.print(table)
    lines = []
    for name, t in report.get("target", {}).items():
        lines.append(f"target {name}: {t['value']:.3f} {_interval(t['interval'])} ({t['rule']}, bar "
                     f"{t['bar']:g}): {'met' if t['met'] else 'SHORT'}")
    lines += [SCRATCH_LEGEND, *scratch_budget_lines(report), INTERVAL_LEGEND]
    console.print("\n".join(lines), highlight=False)
