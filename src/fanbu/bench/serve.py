"""``fanbu bench serve``: the int8 small model against the large model behind a real server.

On one 20 Newsgroups domain the bench derives (or reuses) the large model fine-tuned for the domain
(the derive bench's teacher, fp32 PyTorch) and the int8 student (onnxruntime), starts ``fanbu serve``
as its own process on 127.0.0.1, and drives one-text requests from a second process: throughput and
p50 / p95 latency at concurrency 1 and 16 for each model, on validation texts (which the server logs).
The large model is measured twice: on the same threads as the small one (:data:`EQUAL_THREADS`), and
as a user of the large model would deploy it, with every core (:data:`ALL_CORES`, a server of its
own). The p95 ratio target (small / large at concurrency 16) holds on the worse of the two ratios.
A second server tunes the cascade's threshold from those logs for a target escalation rate, and the
test split goes through the cascade and through the large model alone. Last, the server is killed
with SIGKILL under load and the acknowledged prediction ids missing from the store are counted.

``seeds`` repeats all of that: seed ``s`` draws the load, the validation texts sampled as the derive
data samples them (stratified to the recipe's cap, with the data seed + ``s``; seed 0 is the derived
models' own validation sample) and sent in an order permuted with ``s``. Each headline figure is
reported as its mean over the seeds with a 90% interval (:data:`INTERVAL_METHOD`); the targets are
judged on the means.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fanbu.bench.derive import bench_recipe
from fanbu.bench.stats import INTERVAL_METHOD, mean_interval
from fanbu.collect.store import LogStore
from fanbu.data.sampling import sample_indices, shuffle_indices
from fanbu.derive.data import load_domain_data
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.io import atomic_write_json
from fanbu.registry import Registry
from fanbu.registry.workspace import UnknownModelError, Workspace
from fanbu.serve.loadtest import ServerProcess, drive_in_process, start_server

TARGET_ESCALATION = 0.2  # tuned for on validation texts; the ceiling is 0.3 on the test split
TARGET_MAX_ESCALATION = 0.3
TARGET_P95_RATIO = 0.2  # small p95 / large p95 at concurrency 16, on the worse of the two ratios
TARGET_ACC_MARGIN = 0.01  # the cascade's accuracy at least the large model's minus this
LIMITS = ["limits.max_text_chars=200000", "limits.max_body_bytes=8388608"]
# Equal threads: both models on the same threads, one intra-op thread per run (``threads`` sets
# onnxruntime's and torch's alike) and two batches computed at once (``batching.workers``), one per
# core of the 2-core machine the issue is measured on. Batch parallelism instead of intra-op
# parallelism: a batch of one-text requests is small, intra-op threads would synchronise (and spin) on
# every operator and take the cores the event loop and the load generator need; two single-threaded
# batches use both cores with neither cost. This is how the bench deploys the small model.
EQUAL_THREADS = ["threads=1", "batching.workers=2"]
# All cores: the serving defaults, which a user of the large model alone would run: ``threads`` unset
# (torch and onnxruntime take every core) and one batch at a time.
ALL_CORES = ["batching.workers=1"]
# the speed rows: name -> (the model, small or large; its server's overrides)
ROWS = {
    "small": ("small", EQUAL_THREADS),
    "large": ("large", EQUAL_THREADS),
    "large_all_cores": ("large", ALL_CORES),
}
# the two p95 ratios: name -> the large model's row it divides the small model's p95 by
RATIOS = {"equal_threads": "large", "large_all_cores": "large_all_cores"}
INTERVAL_LEGEND = "[brackets]: 90% Student-t interval of the mean over the seeds"


def derive_models(registry: Registry, recipe: DeriveRecipe, domain: str) -> tuple[str, str]:
    """``(small, large)`` model names for ``domain``, deriving them unless the registry has them."""
    small, large = f"{domain}.quantize", f"{domain}.finetune"
    workspace = Workspace(registry)
    try:
        for ref in (small, large):
            workspace.resolve(ref)
    except UnknownModelError:
        run_derive(recipe, registry)
    return small, large


def load_texts(texts: list[str], labels: list[int], cap: int | None, data_seed: int, seed: int) -> list[str]:
    """Seed ``seed``'s load: ``cap`` of ``texts`` sampled as the derive data samples them, in a seeded order.

    The sample is stratified by label with ``data_seed + seed`` (:func:`fanbu.data.slices.pairs` with
    ``data_seed`` when ``seed`` is 0; all texts when ``cap`` is None or not below their number); the
    order is a permutation seeded with ``seed``.
    """
    size = len(texts)
    chosen = sample_indices(labels, size, size if cap is None else cap, data_seed + seed)
    return [texts[int(chosen[i])] for i in shuffle_indices(len(chosen), seed)]


def measure(server: ServerProcess, model: str, texts: list[str], requests: dict[int, int]) -> dict[str, Any]:
    """Throughput and latency of ``model`` at each concurrency (load from a second process)."""
    warm = drive_in_process(
        url=server.url, token=server.token, model=model, texts=texts, concurrency=2, requests=8
    ).result()
    if warm["ok"] != 8:
        raise RuntimeError(f"warm-up of {model} failed: {warm['errors']}")
    results = {}
    for concurrency, count in requests.items():
        run = drive_in_process(
            url=server.url,
            token=server.token,
            model=model,
            texts=texts,
            concurrency=concurrency,
            requests=count,
        ).result()
        results[f"c{concurrency}"] = {k: run[k] for k in ("rps", "p50_ms", "p95_ms", "ok", "errors")}
    return results


def measure_speed(
    root: Path, token: str, small: str, large: str, texts: list[str], requests: dict[int, int]
) -> dict[str, dict[str, Any]]:
    """:func:`measure` of each row of :data:`ROWS`: both models on equal threads, then the large on all cores.

    The rows that share their overrides share a server; each server runs alone.
    """
    models = {"small": small, "large": large}
    speed: dict[str, dict[str, Any]] = {}
    for overrides, log in ((EQUAL_THREADS, "serve-1.log"), (ALL_CORES, "serve-large-all-cores.log")):
        rows = {row: models[model] for row, (model, o) in ROWS.items() if o == overrides}
        listed = ",".join(dict.fromkeys(rows.values()))
        server = start_server(root, [f"models=[{listed}]", *LIMITS, *overrides], token, root / log)
        try:
            for row, model in rows.items():
                speed[row] = measure(server, model, texts, requests)
        finally:
            server.stop()
    return {row: speed[row] for row in ROWS}


def p95_ratios(speed: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Small p95 / large p95 at concurrency 16, large on equal threads and on all cores."""
    return {
        name: speed["small"]["c16"]["p95_ms"] / speed[row]["c16"]["p95_ms"] for name, row in RATIOS.items()
    }


def accuracy_via(
    server: ServerProcess, model: str, texts: list[str], labels: list[int], names: list[str]
) -> tuple[float, float]:
    """``(accuracy, escalation rate)`` of ``model`` on a labelled split, through the API in batches of 16."""
    correct = escalated = 0
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=300) as client:
        for start in range(0, len(texts), 16):
            response = client.post("/v1/predict", json={"model": model, "texts": texts[start : start + 16]})
            response.raise_for_status()
            for pred, gold in zip(response.json()["predictions"], labels[start : start + 16], strict=True):
                correct += pred["label"] == names[gold]
                escalated += pred["escalated"]
    return correct / len(texts), escalated / len(texts)


def kill_under_load(
    server: ServerProcess,
    model: str,
    texts: list[str],
    url: str,
    ack_file: Path,
    min_acks: int,
    requests: int = 100_000,
) -> dict[str, int]:
    """SIGKILL the server once ``min_acks`` predictions are acknowledged; count acked ids not in the store."""
    ack_file.write_text("")
    future = drive_in_process(
        url=server.url,
        token=server.token,
        model=model,
        texts=texts,
        concurrency=16,
        requests=requests,
        ack_file=str(ack_file),
    )
    deadline = time.monotonic() + 300
    while len(ack_file.read_text().split()) < min_acks:
        if future.done() or time.monotonic() > deadline:
            raise RuntimeError(f"load ended before {min_acks} acknowledgements: {future.result()['errors']}")
        time.sleep(0.05)
    server.kill()
    run = future.result(timeout=300)
    acked = sorted(set(ack_file.read_text().split()) | set(run["ids"]))
    with LogStore(url) as store:
        found = store.existing_ids(acked)
    return {"acknowledged": len(acked), "lost": len(acked) - len(found)}


def run_bench(
    quick: bool,
    out: Path,
    console: Console,
    home: Path | None = None,
    domain: str = "rec",
    seeds: int = 1,
) -> dict[str, Any]:
    """Run the serve bench (its serving phases once per seed), print its table and write its JSON to ``out``."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    started = time.perf_counter()
    recipe = bench_recipe(quick)
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"domains": [domain]})})
    # each seed samples its own load out of every validation text
    every_validation_text = recipe.data.model_copy(update={"max_validation": None})
    requests = {1: 60, 16: 320} if quick else {1: 200, 16: 1000}
    runs = []
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-serve-") as tmp:
        root = Path(home or tmp).resolve()
        registry = Registry.open(root)
        try:
            small, large = derive_models(registry, recipe, domain)
            data = load_domain_data(every_validation_text, domain)
            for seed in range(seeds):
                texts = load_texts(*data.validation, recipe.data.max_validation, recipe.data.seed, seed)
                run = _serve_phases(registry, root, small, large, texts, data, requests, quick)
                runs.append({"seed": seed, **run})
        finally:
            registry.close()
    report = summarise(runs)
    report.update(
        {
            "bench": "serve",
            "quick": quick,
            "domain": domain,
            "seconds": time.perf_counter() - started,
            "command": f"fanbu bench serve{' --quick' if quick else ''} --domain {domain}"
            f"{f' --seeds {seeds}' if seeds > 1 else ''} --out {out}",
            "models": {"small": small, "large": large},
        }
    )
    atomic_write_json(out, report)
    print_table(report, console)
    return report


def _serve_phases(
    registry: Registry,
    root: Path,
    small: str,
    large: str,
    val_texts: list[str],
    data: Any,
    requests: dict[int, int],
    quick: bool,
) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    test_texts, test_labels = list(data.test[0]), list(data.test[1])
    names = list(data.label_names)
    with LogStore(registry.url) as store:
        store.clear()  # the threshold is tuned on this run's validation logs only, never on a test text
    speed = measure_speed(root, token, small, large, val_texts, requests)
    cascade = (
        f"cascades={{cascade: {{small: {small}, large: {large}, target_escalation_rate: "
        f"{TARGET_ESCALATION}, min_samples: 50}}}}"
    )
    server = start_server(root, [cascade, *LIMITS, *EQUAL_THREADS], token, root / "serve-2.log")
    try:
        threshold = httpx.get(f"{server.url}/v1/models", headers=server.headers, timeout=60).json()["routes"][
            "cascade"
        ]
        acc, escalation = accuracy_via(server, "cascade", test_texts, test_labels, names)
        large_acc, _ = accuracy_via(server, large, test_texts, test_labels, names)
        small_acc, _ = accuracy_via(server, small, test_texts, test_labels, names)
        killed = kill_under_load(
            server, "cascade", val_texts, registry.url, root / "acks.txt", min_acks=100 if quick else 400
        )
    finally:
        if server.proc.poll() is None:
            server.stop()
    return {
        **speed,
        "cascade": {
            "escalation_rate": escalation,
            "acc": acc,
            "large_acc": large_acc,
            "small_acc": small_acc,
            "threshold": threshold["threshold"],
            "target_escalation_rate": TARGET_ESCALATION,
            "n_test": len(test_texts),
        },
        "lost_after_kill": killed["lost"],
        "acknowledged_before_kill": killed["acknowledged"],
        "p95_ratio_c16": p95_ratios(speed),
    }


def headline(run: dict[str, Any]) -> dict[str, float]:
    """One seed's headline figures, by dotted name (``small.c16.p95_ms``, ``p95_ratio_c16.equal_threads``)."""
    figures = {
        f"{row}.{c}.{k}": stats[k]
        for row in ROWS
        for c, stats in run[row].items()
        for k in ("rps", "p50_ms", "p95_ms")
    }
    figures |= {f"p95_ratio_c16.{name}": run["p95_ratio_c16"][name] for name in RATIOS}
    figures |= {
        f"cascade.{k}": run["cascade"][k]
        for k in ("acc", "large_acc", "small_acc", "escalation_rate", "threshold")
    }
    return figures


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The report of the per-seed ``runs``: means of the headline figures, intervals, targets, the runs.

    Speed rows, ratios and the cascade carry the means over the seeds (a row's ``ok`` and ``errors``
    are summed); the kill test's counts are summed. ``p95_ratio_c16.worse`` is the larger of the two
    mean ratios, and the p95 target is judged on it.
    """
    per_seed = [headline(run) for run in runs]
    figures = {}
    for name in per_seed[0]:
        values = [figures_of_seed[name] for figures_of_seed in per_seed]
        mean, interval = mean_interval(values)
        figures[name] = {"mean": mean, "interval": interval, "values": values}
    report: dict[str, Any] = {}
    for name, figure in figures.items():
        *path, leaf = name.split(".")
        node = report
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = figure["mean"]
    for row in ROWS:
        for c in report[row]:
            report[row][c]["ok"] = sum(run[row][c]["ok"] for run in runs)
            errors: dict[str, int] = {}
            for run in runs:
                for error, count in run[row][c]["errors"].items():
                    errors[error] = errors.get(error, 0) + count
            report[row][c]["errors"] = errors
    ratios = report["p95_ratio_c16"]
    worse = max(RATIOS, key=lambda name: ratios[name])
    ratios["worse"] = ratios[worse]
    report["cascade"] |= {k: runs[0]["cascade"][k] for k in ("target_escalation_rate", "n_test")}
    report["lost_after_kill"] = sum(run["lost_after_kill"] for run in runs)
    report["acknowledged_before_kill"] = sum(run["acknowledged_before_kill"] for run in runs)
    report["deployments"] = {
        row: {"model": model, "overrides": overrides, "cores": os.cpu_count()}
        for row, (model, overrides) in ROWS.items()
    }
    report["seeds"] = len(runs)
    report["over_seeds"] = {"method": INTERVAL_METHOD, "figures": figures}
    report["target"] = targets(report, worse)
    report["runs"] = runs
    return report


def targets(report: dict[str, Any], worse: str) -> dict[str, dict[str, Any]]:
    """The bench's targets, each ``{value, bar, met, interval, rule}``, met (or not) on the mean over seeds.

    ``p95_ratio_c16`` is judged on the worse (larger) of the two mean ratios, named in ``on``; each ratio
    has its own entry as well. ``interval``: the value's interval over the seeds (None with one seed, and
    for the kill test's count, a total over the seeds).
    """
    figures = report["over_seeds"]["figures"]

    def target(value: float, bar: float, at_least: bool, rule: str, figure: str | None) -> dict[str, Any]:
        return {
            "value": value,
            "bar": bar,
            "met": value >= bar if at_least else value <= bar,
            "interval": figures[figure]["interval"] if figure else None,
            "rule": rule,
        }

    ratios, cascade = report["p95_ratio_c16"], report["cascade"]
    ratio_rule = "small p95 / large p95 at concurrency 16, {}, <= bar"
    sides = {
        "equal_threads": "large on the small one's threads",
        "large_all_cores": "large on all cores",
    }
    return {
        "p95_ratio_c16": {
            **target(
                ratios[worse],
                TARGET_P95_RATIO,
                False,
                ratio_rule.format("the worse of the two ratios"),
                f"p95_ratio_c16.{worse}",
            ),
            "on": worse,
        },
        **{
            f"p95_ratio_c16_{name}": target(
                ratios[name], TARGET_P95_RATIO, False, ratio_rule.format(sides[name]), f"p95_ratio_c16.{name}"
            )
            for name in RATIOS
        },
        "cascade_acc": target(
            cascade["acc"],
            cascade["large_acc"] - TARGET_ACC_MARGIN,
            True,
            f"cascade acc on the test split >= the large model's - {TARGET_ACC_MARGIN}",
            "cascade.acc",
        ),
        "escalation_rate": target(
            cascade["escalation_rate"],
            TARGET_MAX_ESCALATION,
            False,
            "the cascade's escalation rate on the test split <= bar",
            "cascade.escalation_rate",
        ),
        "lost_after_kill": target(
            report["lost_after_kill"],
            0,
            False,
            "acknowledged predictions missing from the store after kill -9, over all seeds, <= bar",
            None,
        ),
    }


def _threads(row: str) -> str:
    """A row's threads in words: ``threads=1, 2 batch workers`` or ``threads on all 16 cores, 1 batch worker``."""
    overrides = dict(o.split("=", 1) for o in ROWS[row][1])
    threads = (
        f"threads={overrides['threads']}"
        if "threads" in overrides
        else f"threads on all {os.cpu_count()} cores"
    )
    workers = int(overrides.get("batching.workers", "1"))
    return f"{threads}, {workers} batch worker{'s' if workers > 1 else ''}"


def print_table(report: dict[str, Any], console: Console) -> None:
    """The bench's numbers as a rich table (means over the seeds, with intervals when there are several)."""
    figures = report["over_seeds"]["figures"]

    def cell(name: str, digits: int = 1) -> str:
        figure = figures[name]
        text = f"{figure['mean']:.{digits}f}"
        if figure["interval"] is not None:
            low, high = figure["interval"]
            text += f" [{low:.{digits}f}, {high:.{digits}f}]"
        return text

    seeds = report["seeds"]
    table = Table(
        title=f"fanbu bench serve{' --quick' if report['quick'] else ''} on {report['domain']} "
        f"({seeds} seed{'s' if seeds > 1 else ''}, {report['seconds']:.0f} s)"
    )
    for column in (
        "model",
        "threads",
        "c1 rps",
        "c1 p50 ms",
        "c1 p95 ms",
        "c16 rps",
        "c16 p50 ms",
        "c16 p95 ms",
    ):
        table.add_column(column, justify="left" if column in ("model", "threads") else "right")
    for row, (model, _) in ROWS.items():
        label = f"{model} ({report['models'][model]})" + (", all cores" if row == "large_all_cores" else "")
        table.add_row(
            escape(label),
            _threads(row),
            *(escape(cell(f"{row}.{c}.{k}")) for c in ("c1", "c16") for k in ("rps", "p50_ms", "p95_ms")),
        )
    console.print(table)
    target = report["target"]
    ratios = Table(
        title=f"small p95 / large p95 at concurrency 16 (target <= {TARGET_P95_RATIO} on the worse)",
        caption="small, large: the threads each side's server had (all cores: the serving defaults, "
        "threads unset and one batch at a time)",
    )
    for column in ("ratio", "small", "large", "value", "target"):
        ratios.add_column(column, justify="right" if column in ("value", "target") else "left")
    for name, row in RATIOS.items():
        entry = target[f"p95_ratio_c16_{name}"]
        ratios.add_row(
            name.replace("_", " "),
            _threads("small"),
            _threads(row),
            escape(cell(f"p95_ratio_c16.{name}", 3)),
            f"<= {entry['bar']} {'met' if entry['met'] else 'SHORT'}",
        )
    p95 = target["p95_ratio_c16"]
    ratios.add_row(
        f"worse ({p95['on'].replace('_', ' ')})",
        "",
        "",
        escape(cell(f"p95_ratio_c16.{p95['on']}", 3)),
        f"<= {p95['bar']} {'[bold]met[/]' if p95['met'] else '[bold red]SHORT[/]'}",
    )
    console.print(ratios)
    lines = [
        f"cascade: acc {cell('cascade.acc', 3)} vs large {cell('cascade.large_acc', 3)} "
        + f"(small {cell('cascade.small_acc', 3)}), escalation {cell('cascade.escalation_rate', 3)} "
        + f"at threshold {cell('cascade.threshold', 3)} "
        + f"(target acc >= large - {TARGET_ACC_MARGIN}, escalation <= {TARGET_MAX_ESCALATION})",
        f"kill -9 under load: {report['lost_after_kill']} of {report['acknowledged_before_kill']} acknowledged "
        + f"predictions missing from the store{' over the seeds' if seeds > 1 else ''} (target 0)",
    ]
    if seeds > 1:
        lines.append(INTERVAL_LEGEND)
    console.print("\n".join(lines), highlight=False, markup=False)
