"""Parameter counts, size on disk, latency and throughput with predicts of known cost."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from fanbu.evaluate import (
    EvaluationError,
    LatencyStats,
    measure_latency,
    measure_throughput,
    param_count,
    size_on_disk,
    speed_profile,
)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)  # 40
        self.head = nn.Linear(4, 10, bias=False)  # 40, tied to emb
        self.head.weight = self.emb.weight
        self.norm = nn.LayerNorm(4)  # 8


def test_tied_parameter_counted_once() -> None:
    assert param_count(Tied()) == 48


def test_storage_shared_parameters_counted_once() -> None:
    module = Tied()
    module.head.weight = nn.Parameter(torch.empty(10, 4))
    assert param_count(module) == 88
    module.head.weight.data = module.emb.weight.data  # distinct Parameter, same storage
    assert param_count(module) == 48


def test_trainable_only() -> None:
    module = Tied()
    module.norm.requires_grad_(False)
    assert param_count(module, trainable_only=True) == 40
    assert param_count(module) == 48


def test_llama_tied_embeddings() -> None:
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    assert param_count(model) == sum(unique.values())
    assert param_count(model) == sum(p.numel() for p in model.state_dict().values()) - 100 * 16


def test_size_on_disk(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_bytes(b"{}" * 12)
    assert size_on_disk(tmp_path) == 1024
    assert size_on_disk(str(tmp_path / "model.safetensors")) == 1000


def test_size_on_disk_missing_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist; pass the directory"):
        size_on_disk(missing)


class Recorder:
    """A predict that sleeps ``delay`` seconds per call and records the batches it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.batches.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        return [len(t) for t in texts]


def test_latency_of_known_sleep() -> None:
    predict = Recorder(delay=0.005)
    stats = measure_latency(predict, ["a", "b", "c"], warmup=2, iterations=10)
    assert isinstance(stats, LatencyStats)
    assert len(predict.batches) == 12
    assert (stats.iterations, stats.batch_size) == (10, 1)
    assert 5.0 <= stats.p50_ms < 25.0
    assert stats.p95_ms >= stats.p50_ms
    assert stats.mean_ms >= 5.0


def test_latency_cycles_through_texts() -> None:
    predict = Recorder()
    measure_latency(predict, ["a", "b", "c"], batch_size=2, warmup=1, iterations=3)
    assert predict.batches == [["a", "b"], ["c", "a"], ["b", "c"], ["a", "b"]]


def test_throughput_with_fake_predict() -> None:
    predict = Recorder(delay=0.01)
    items_per_s = measure_throughput(predict, ["x"] * 5, batch_size=32, warmup=1, iterations=3)
    assert len(predict.batches) == 4
    assert all(len(b) == 32 for b in predict.batches)
    assert 32 / 0.05 < items_per_s <= 32 / 0.01  # at most one batch per 10 ms


def test_speed_profile_keys_and_calls() -> None:
    predict = Recorder(delay=0.001)
    profile = speed_profile(predict, ["a", "b"], iterations_b1=4, iterations_b32=2)
    assert set(profile) == {"latency_b1_p50_ms", "latency_b1_p95_ms", "throughput_b32"}
    assert profile["latency_b1_p95_ms"] >= profile["latency_b1_p50_ms"] >= 1.0
    assert 0 < profile["throughput_b32"] <= 32 / 0.001
    sizes = [len(b) for b in predict.batches]
    assert sizes == [1] * (3 + 4) + [32] * (1 + 2)


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        ([], {}, "no texts to time predict on"),
        (["a"], {"batch_size": 0}, "batch_size must be >= 1, got 0"),
        (["a"], {"warmup": -1}, "warmup must be >= 0, got -1"),
        (["a"], {"iterations": 0}, "iterations must be >= 1, got 0"),
    ],
)
def test_bad_arguments_messages(texts: list[str], kwargs: dict[str, int], message: str) -> None:
    for measure in (measure_latency, measure_throughput):
        with pytest.raises(EvaluationError, match=message):
            measure(Recorder(), texts, **kwargs)


def test_frozen_clock_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fanbu.evaluate.speed.time.perf_counter", lambda: 1.0)
    with pytest.raises(EvaluationError, match="clock did not advance while timing predict; raise iterations"):
        measure_throughput(Recorder(), ["a"], iterations=1)
