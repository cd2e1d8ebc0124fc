"""``fanbu bench lm``, serve rows: a small and a large causal LM streamed behind a real server.

The small LM is measured as deployed: it is saved with its CTranslate2 int8 export under
``ctranslate2/`` (:func:`fanbu.models.lm_export.export_ctranslate2`, as ``fanbu derive``'s export stage
writes it), so the server (``generation.runtime: auto``) generates with CTranslate2; the same weights
are also saved without the export as ``small_torch`` (PyTorch fp32), and the large LM runs on PyTorch
fp32. All three are served by one ``fanbu serve`` in its own process on 127.0.0.1. For each model and
concurrency (1 and 4), ``requests`` streamed greedy ``/v1/completions`` requests are sent over HTTP
(:func:`fanbu.serve.lm_loadtest.drive_stream`) with the openings of BBC News validation articles as
prompts: p50 / p95 time to first token and tokens per second (all completion tokens over the phase's
wall time). Streaming is checked on the way, per runtime: each model's streamed greedy completions must
equal its whole (non-streamed) answers to the same prompts.

The target compares the small LM as deployed (CTranslate2 int8) with the large one (PyTorch fp32), as the
classification serve bench compares the int8 ONNX small model with the large one;
``ttft_p95_c4_ratio_same_runtime`` (small on PyTorch / large on PyTorch) is reported beside it, as
information.

The cascade row: a second server starts with an LM cascade whose threshold is tuned at start-up from
the small model's logged mean log-probabilities on the validation prompts, for
``target_escalation_rate``; the test articles' openings then go through it, once, and the share that
escalated is reported. ``seeds`` repeats the speed phases (seed ``s`` permutes the prompts); the
headline figures are means over the seeds with a 90% interval.
"""

from __future__ import annotations

import copy
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from pydantic import Field
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from fanbu.bench.stats import INTERVAL_METHOD, mean_interval
from fanbu.config import Strict
from fanbu.data.builtin import bbc_news_lm_domains
from fanbu.models import Provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.lm_export import export_ctranslate2
from fanbu.registry import Registry
from fanbu.serve.lm_ct2 import CT2_DIR, ct2_installed
from fanbu.serve.lm_loadtest import drive_stream
from fanbu.serve.loadtest import ServerProcess, start_server

TARGET_TTFT_RATIO = 0.5  # the small LM's p95 time to first token at c4 at most half the large one's
CONCURRENCY = (1, 4)
# the small LM as deployed (CTranslate2 int8), the same on PyTorch fp32, the large LM (PyTorch fp32)
MODELS = ("small", "small_torch", "large")


class LMServeBenchSettings(Strict):
    """The serve rows of ``fanbu bench lm``."""

    requests: int = Field(24, ge=2, description="Streamed requests per model and concurrency.")
    max_tokens: int = Field(32, ge=1, description="New tokens per request (greedy).")
    prompt_words: int = Field(40, ge=1, description="Words of an article's opening used as a prompt.")
    prompts: int = Field(40, ge=4, description="Validation prompts (speed phases and cascade tuning).")
    test_prompts: int = Field(60, ge=4, description="Test prompts sent through the cascade, once.")
    target_escalation_rate: float = Field(0.2, gt=0.0, lt=1.0, description="The cascade's tuned-for rate.")
    threads: int = Field(1, ge=1, description="Intra-op threads per generation (the server's `threads`).")
    workers: int = Field(2, ge=1, description="Generations of one model at once (generation.workers).")
    seeds: int = Field(2, ge=1, description="Repeats of the speed phases, each with its own prompt order.")
    max_docs: int | None = Field(None, ge=10, description="Cap on BBC articles per category.")


def lm_serve_settings(quick: bool) -> LMServeBenchSettings:
    """Quick: fewer requests, shorter completions, one seed."""
    if quick:
        return LMServeBenchSettings(
            requests=8, max_tokens=16, prompts=20, test_prompts=20, seeds=1, max_docs=40
        )
    return LMServeBenchSettings()


def bbc_prompts(settings: LMServeBenchSettings) -> tuple[list[str], list[str]]:
    """(validation, test) prompts: the first ``prompt_words`` words of BBC articles, all categories."""
    validation: list[str] = []
    test: list[str] = []
    for domain in bbc_news_lm_domains(max_docs=settings.max_docs):
        validation += [" ".join(t.split()[: settings.prompt_words]) for t in domain.validation.texts]
        test += [" ".join(t.split()[: settings.prompt_words]) for t in domain.test.texts]
    mixer = random.Random(0)
    mixer.shuffle(validation)
    mixer.shuffle(test)
    return validation[: settings.prompts], test[: settings.test_prompts]


def _register(registry: Registry, name: str, handle: CausalLMHandle, ct2: bool = False) -> str:
    """Save ``handle`` as ``name`` (with its CTranslate2 int8 export under ``ctranslate2/`` if ``ct2``)."""
    version = registry.next_version(name)
    path = handle.save(registry.model_dir(name, version), Provenance(name=f"{name}:v{version}"))
    if ct2:
        export_ctranslate2(handle, Path(path) / CT2_DIR, "int8")
    return registry.register_model(name=name, path=path, kind="causal_lm", version=version).id


def _runtimes(server: ServerProcess) -> dict[str, str]:
    """What generates for each model: the server's word where ``/v1/models`` says it, else what ``auto`` picks."""
    routes = httpx.get(f"{server.url}/v1/models", headers=server.headers).json()["lm_routes"]
    picked = {
        "small": "ctranslate2" if ct2_installed() else "torch",
        "small_torch": "torch",
        "large": "torch",
    }
    return {model: str(routes.get(model, {}).get("runtime") or picked[model]) for model in MODELS}


def _whole(server: ServerProcess, model: str, prompts: list[str], max_tokens: int) -> list[str]:
    texts = []
    for prompt in prompts:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        response = httpx.post(f"{server.url}/v1/completions", json=body, headers=server.headers, timeout=300)
        response.raise_for_status()
        texts.append(response.json()["choices"][0]["text"])
    return texts


def _speed(server: ServerProcess, prompts: list[str], settings: LMServeBenchSettings) -> dict[str, Any]:
    """Per model and concurrency, per seed: the streamed phases; and whether streams equal whole answers
    (per model, so per runtime); and the share of probe prompts the small LM answers alike on both runtimes."""
    rows: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    runtimes = _runtimes(server)
    for model in MODELS:
        ok = True
        probe = prompts[:4]
        whole = _whole(server, model, probe, settings.max_tokens)  # also warms the model up
        answers[model] = whole
        rows[model] = {"runtime": runtimes[model]}
        for c in CONCURRENCY:
            runs = []
            for seed in range(settings.seeds):
                order = list(prompts)
                random.Random(seed).shuffle(order)
                run = drive_stream(
                    server.url, server.token, model, order, c, settings.requests, settings.max_tokens
                )
                if run["errors"]:
                    raise RuntimeError(f"{model} at concurrency {c}: errors {run['errors']}")
                streamed = {order[i]: t for i, t in run.pop("texts").items()}
                ok &= all(streamed.get(p, w) == w for p, w in zip(probe, whole, strict=True))
                runs.append(run)
            rows[model][f"c{c}"] = _summary(runs)
        check = drive_stream(server.url, server.token, model, probe, 1, len(probe), settings.max_tokens)
        ok &= [check["texts"][i] for i in range(len(probe))] == whole
        rows[model]["streaming_ok"] = ok
    same = sum(a == b for a, b in zip(answers["small"], answers["small_torch"], strict=True))
    return {
        "rows": rows,
        "streaming_ok": all(rows[model]["streaming_ok"] for model in MODELS),
        "small_greedy_same_as_torch": same / len(answers["small"]),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("ttft_p50_ms", "ttft_p95_ms", "tokens_per_s"):
        mean, interval = mean_interval([r[key] for r in runs])
        out[key] = mean
        out[f"{key}_interval"] = interval
    out["runs"] = runs
    return out


def _cascade(
    home: Path, token: str, test: list[str], settings: LMServeBenchSettings, log: Path
) -> dict[str, Any]:
    """The LM cascade tuned on the logged validation prompts, its escalation rate on the test prompts."""
    overrides = [
        "lm_cascades.cascade.small=small",
        "lm_cascades.cascade.large=large",
        f"lm_cascades.cascade.target_escalation_rate={settings.target_escalation_rate}",
        "lm_cascades.cascade.min_samples=4",
        f"threads={settings.threads}",
        f"generation.workers={settings.workers}",
    ]
    server = start_server(home, overrides, token, log)
    try:
        threshold = httpx.get(f"{server.url}/v1/models", headers=server.headers).json()["lm_routes"][
            "cascade"
        ]
        escalated = 0
        for prompt in test:
            body = {"model": "cascade", "prompt": prompt, "max_tokens": settings.max_tokens, "temperature": 0}
            response = httpx.post(
                f"{server.url}/v1/completions", json=body, headers=server.headers, timeout=300
            )
            response.raise_for_status()
            escalated += bool(response.json()["escalated"])
    finally:
        server.stop()
    return {
        "threshold": threshold["threshold"],
        "escalation_rate": escalated / len(test),
        "prompts": len(test),
    }


def run_lm_serve_bench(
    small: CausalLMHandle,
    large: CausalLMHandle,
    quick: bool,
    console: Console,
    settings: LMServeBenchSettings | None = None,
) -> dict[str, Any]:
    """The ``serve`` section of ``fanbu bench lm``: ``{small, large}.{c1, c4}``, the cascade and targets."""
    settings = settings or lm_serve_settings(quick)
    validation, test = bbc_prompts(settings)
    started = time.perf_counter()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-lm-serve-") as tmp:
        home = Path(tmp) / "home"
        registry = Registry.open(home)
        try:
            ids = {
                "small": _register(registry, "small", small, ct2=True),
                "small_torch": _register(registry, "small_torch", small),
                "large": _register(registry, "large", large),
            }
        finally:
            registry.close()
        overrides = [
            f"models=[{', '.join(MODELS)}]",
            f"threads={settings.threads}",
            f"generation.workers={settings.workers}",
            f"limits.max_queue={max(64, settings.requests)}",
        ]
        console.print(
            f"[bold]lm serve[/]: {ids['small']} (CTranslate2 int8), {ids['small_torch']} (the same on PyTorch) "
            f"and {ids['large']} at concurrency {CONCURRENCY}"
        )
        server = start_server(home, overrides, token, Path(tmp) / "serve.log")
        try:
            speed = _speed(server, validation, settings)
        finally:
            server.stop()
        console.print("[bold]lm serve[/]: the cascade, tuned on the validation prompts' logs")
        cascade = _cascade(home, token, test, settings, Path(tmp) / "cascade.log")
    report: dict[str, Any] = {**speed["rows"], "cascade": cascade, "streaming_ok": speed["streaming_ok"]}
    report["small_greedy_same_as_torch"] = speed["small_greedy_same_as_torch"]
    report["ttft_p95_c4_ratio_same_runtime"] = (
        report["small_torch"]["c4"]["ttft_p95_ms"] / report["large"]["c4"]["ttft_p95_ms"]
    )
    report["models"] = ids
    report["settings"] = settings.model_dump(mode="json")
    report["interval_method"] = INTERVAL_METHOD
    report["seconds"] = time.perf_counter() - started
    report["target"] = lm_serve_targets(report)
    return report


def lm_serve_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Streaming works; the small LM's p95 TTFT at c4, as deployed (CTranslate2 int8), is at most half the
    large one's (PyTorch fp32)."""
    ratio = report["small"]["c4"]["ttft_p95_ms"] / report["large"]["c4"]["ttft_p95_ms"]
    return {
        "serve_streaming": {
            "value": float(report["streaming_ok"]),
            "bar": 1.0,
            "met": bool(report["streaming_ok"]),
        },
        "serve_ttft_p95_c4_ratio": {
            "value": ratio,
            "bar": TARGET_TTFT_RATIO,
            "met": ratio <= TARGET_TTFT_RATIO,
        },
    }


def print_lm_serve_table(report: dict[str, Any], console: Console) -> None:
    """The serve rows as a table."""
    table = Table(title="LM serving: streamed /v1/completions over HTTP (means over seeds)")
    for column in ("model", "runtime", "concurrency", "TTFT p50 ms", "TTFT p95 ms", "tokens/s"):
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    for model in MODELS:
        for c in CONCURRENCY:
            row = report[model][f"c{c}"]
            table.add_row(
                model,
                report[model]["runtime"],
                str(c),
                f"{row['ttft_p50_ms']:.0f}",
                f"{row['ttft_p95_ms']:.0f}",
                f"{row['tokens_per_s']:.1f}",
            )
    console.print(table)
    cascade = report["cascade"]
    console.print(
        f"cascade: threshold {cascade['threshold']:.3f} (mean log-prob), escalation rate "
        f"{cascade['escalation_rate']:.2f} on {cascade['prompts']} test prompts; streaming ok: "
        f"{report['streaming_ok']}",
        highlight=False,
    )
    console.print(
        f"same runtime (small on PyTorch / large), p95 TTFT at c4: {report['ttft_p95_c4_ratio_same_runtime']:.3f} "
        f"(information); small greedy answers equal on CTranslate2 and PyTorch: "
        f"{report['small_greedy_same_as_torch']:.2f} of the probe prompts",
        highlight=False,
    )
    for name, target in report["target"].items():
        console.print(
            f"  {name}: {target['value']:.3f} (bar {target['bar']}) {'met' if target['met'] else 'NOT met'}",
            highlight=False,
        )


def random_small_lm(
    large: CausalLMHandle, layers: int = 2, hidden: int = 128, seed: int = 0
) -> CausalLMHandle:
    """A randomly initialised Llama with ``large``'s tokenizer and vocabulary, ``layers`` x ``hidden`` wide.

    A stand-in small LM for the serve rows when no derived student is at hand (its answers are noise, its
    speed is that of a small LM of its shape).
    """
    config = copy.deepcopy(large.model.config)
    heads = max(1, hidden // 64)
    config.update(
        {
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "intermediate_size": hidden * 4,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "head_dim": hidden // heads,
        }
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return CausalLMHandle(model, large.tokenizer, large.max_length)
