"""``fanbu demo``: the main job on the built-in default.

It trains **large v0**: the packaged MiniLM encoder with one head per task, on the public
slices of the default benchmark (20 Newsgroups domains) and on the held-out tasks, evaluates it per
domain on the test splits, measures its CPU latency, and registers the base model, the datasets, the
run, large v0 and every evaluation in the lineage registry. Then it runs one whole generation of the
cycle: a small int8 model per domain derived from large v0, the domains' experts fed back into large
v0 (:mod:`fanbu.demo.feedback`), the gate, and the HTML report (``fanbu report``).

The recipe (:class:`DemoRecipe`) is in :mod:`fanbu.demo.recipe`.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fanbu.data.domain import Benchmark
from fanbu.data.slices import benchmark_of, pairs, split_pairs
from fanbu.demo.feedback import feed_back
from fanbu.demo.recipe import BenchmarkSettings, DemoRecipe
from fanbu.evaluate.metrics import classification_metrics
from fanbu.evaluate.speed import measure_latency, param_count, size_on_disk, speed_profile
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from fanbu.train.classify import evaluate_heads
from fanbu.train.large import train_large_v0


def _slices(bench: Benchmark, settings: BenchmarkSettings) -> tuple[dict, dict, dict]:
    names, seed = bench.names(), settings.seed  # the feedback domains, then the held-out tasks
    return (
        split_pairs(bench, "public", names, settings.max_public, seed),
        split_pairs(bench, "validation", names, settings.max_validation, seed),
        split_pairs(bench, "test", names, settings.max_test, seed),
    )


def run_demo(recipe: DemoRecipe, registry: Registry, console: Console) -> dict:
    """Train, evaluate and register large v0; return the summary that was printed."""
    started = time.perf_counter()
    settings = recipe.benchmark
    workspace = Workspace(registry)
    with workspace.run("demo", recipe) as run:
        console.print("[bold]Loading the default benchmark[/] (20 Newsgroups domains; held-out: BBC News, Reuters R8)")
        bench = benchmark_of(settings)
        train, validation, test = _slices(bench, settings)
        dataset_ids = _register_datasets(registry, bench, train)

        console.print(f"[bold]Loading the large model[/] {recipe.model}")
        handle, base = workspace.load_spec(recipe.model, max_length=recipe.max_length)
        checkpoints = run.dir / "checkpoints"
        result = train_large_v0(handle, bench, train, recipe.train, validation, head_seed=recipe.train.seed,
                                checkpoint_dir=checkpoints)
        scores = evaluate_heads(handle, test)
        texts = [t for texts, _ in test.values() for t in texts[:64]]
        first = bench.domains[0].name
        speed = speed_profile(lambda batch: handle.predict(list(batch), first, batch_size=32), texts,
                              iterations_b1=recipe.latency_iterations)

        fingerprints = {name: bench.public(name).fingerprint for name in train}
        provenance = Provenance(
            recipe=recipe.model_dump(mode="json"), parents=[base], data_fingerprints=fingerprints,
            base_model=recipe.model.removeprefix("package:"), base_model_relation="finetune",
            metrics={f"{d}.test_acc": r["accuracy"] for d, r in scores.items()},
        )
        model = workspace.save_and_register(
            handle, provenance, name="large", relation="finetune", datasets=dataset_ids, status="champion",
            metadata={"heads": handle.labels, "best_val": result.state.best},
        )
        path = Path(model.path)
        for domain, metrics in scores.items():
            registry.record_evaluation(model.id, domain=domain, split="test", metrics=metrics,
                                       dataset_fingerprint=bench.domain(domain).test.fingerprint, run_id=run.id)
        profile = {**speed, "params": float(param_count(handle.model)), "size_bytes": float(size_on_disk(path))}
        registry.record_evaluation(model.id, domain="*", split="speed", metrics=profile, run_id=run.id)
        summary = {"model": model.id, "path": str(path), "test": scores, "speed": profile,
                   "seconds": time.perf_counter() - started,
                   "feedback_domains": [d.name for d in bench.domains],
                   "heldout": [d.name for d in bench.heldout]}
        run.summary = summary
    _print_summary(console, summary)
    if recipe.derive.enabled:
        summary["small"] = derive_small(recipe, registry, summary, console)
    if recipe.feedback.enabled:
        small = {row["domain"]: row["model"] for row in summary.get("small", [])}
        summary["feedback"] = feed_back(recipe, registry, summary["model"], console, small)
    from fanbu.report import write_report

    summary["report"] = str(write_report(registry, Path(registry.home or ".") / "report.html"))
    console.print(f"Report written to {summary['report']}", highlight=False, soft_wrap=True)
    console.print(f"Demo finished in {time.perf_counter() - started:.0f} s. See the lineage: fanbu lineage")
    return summary


def derive_small(recipe: DemoRecipe, registry: Registry, summary: dict, console: Console) -> list[dict]:
    """脱胎: one small int8 model per feedback domain from large v0, on its private slice; print the table."""
    from fanbu.derive.data import DeriveData
    from fanbu.derive.pipeline import DeriveRecipe, run_derive

    settings = recipe.benchmark
    derive = DeriveRecipe(
        teacher=summary["model"], max_length=recipe.max_length, stages=recipe.derive.stages,
        data=DeriveData.of(
            settings, None, recipe.derive.max_train, recipe.derive.transfer, recipe.derive.max_transfer
        ),
    )
    console.print(f"[bold]Deriving a small model per domain[/] from {summary['model']} (private slices)")
    results = run_derive(derive, registry)
    rows = []
    for result in results:
        rows.append(_small_row(registry, result, summary, settings, recipe.latency_iterations))
    _print_small(console, summary, rows)
    return rows


def _small_row(registry: Registry, result: dict, summary: dict, settings: BenchmarkSettings, iterations: int) -> dict:
    domain = result["domain"]
    deployed = Workspace(registry).load(result["final"], runtime="onnx_int8")
    bench = benchmark_of(settings)
    texts, labels = pairs(bench.domain(domain).test, settings.max_test, settings.seed)
    metrics = classification_metrics(deployed.predict(texts, domain, batch_size=64), labels,
                                     len(bench.domain(domain).label_names))
    latency = measure_latency(lambda b: deployed.predict(list(b), domain, batch_size=1), texts[:64],
                              iterations=iterations)
    registry.record_evaluation(result["final"], domain=domain, split="test-int8", metrics=metrics)
    return {"domain": domain, "model": result["final"], "acc": metrics["accuracy"],
            "large_acc": summary["test"][domain]["accuracy"], "params": result["params"],
            "size_bytes": size_on_disk(Path(registry.get_model(result["final"]).path) / "model.int8.onnx"),
            "p50_ms": latency.p50_ms}


def _print_small(console: Console, summary: dict, rows: list[dict]) -> None:
    speed = summary["speed"]
    table = Table(title="small models (int8, onnxruntime) derived from " + summary["model"])
    for column in ("domain", "model", "params", "size MB", "p50 ms (b1)", "accuracy", "large v0 acc"):
        table.add_column(column, justify="left" if column in ("domain", "model") else "right")
    table.add_row("(large)", summary["model"], f"{int(speed['params']):,}", f"{speed['size_bytes'] / 1e6:.1f}",
                  f"{speed['latency_b1_p50_ms']:.1f}", "", "")
    for row in rows:
        table.add_row(row["domain"], row["model"], f"{row['params']:,}", f"{row['size_bytes'] / 1e6:.1f}",
                      f"{row['p50_ms']:.1f}", f"{row['acc']:.3f}", f"{row['large_acc']:.3f}")
    console.print(table)


def _register_datasets(registry: Registry, bench: Benchmark, train: dict) -> list[str]:
    ids = []
    for domain in (*bench.domains, *bench.heldout):
        for split_name, split in (
            ("public", bench.public(domain.name)), ("private", bench.private(domain.name)),
            ("validation", bench.validation(domain.name)), ("gate", bench.gate(domain.name)),
            ("test", domain.test),
        ):
            if len(split) == 0:
                continue
            record = registry.register_dataset(
                name=f"{domain.name}/{split_name}", fingerprint=split.fingerprint, n_rows=len(split),
                domain=domain.name, split=split_name, source=domain.source,
            )
            if split_name == "public":
                ids.append(record.id)
    return ids


def _print_summary(console: Console, summary: dict) -> None:
    table = Table(title=f"{summary['model']}: test accuracy per domain")
    table.add_column("domain")
    table.add_column("role")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("macro-F1", justify="right")
    for domain, metrics in summary["test"].items():
        role = "feedback" if domain in summary["feedback_domains"] else "held-out"
        table.add_row(domain, role, str(int(metrics["n"])), f"{metrics['accuracy']:.3f}", f"{metrics['macro_f1']:.3f}")
    console.print(table)
    speed = summary["speed"]
    console.print(
        f"CPU latency at batch 1: p50 {speed['latency_b1_p50_ms']:.1f} ms, p95 {speed['latency_b1_p95_ms']:.1f} ms; "
        f"throughput at batch 32: {speed['throughput_b32']:.1f} texts/s; "
        f"{int(speed['params']):,} parameters, {speed['size_bytes'] / 1e6:.1f} MB on disk"
    )
    console.print(f"Saved {summary['path']} (trained and scored in {summary['seconds']:.0f} s)")
