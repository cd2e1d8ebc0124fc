"""Generation on CTranslate2: a tiny random Llama's int8 export served under the PyTorch loop's contract."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from fanbu.config import validate
from fanbu.models import CausalLMHandle
from fanbu.models.lm_export import CTranslate2LM, export_ctranslate2
from fanbu.registry import ModelRecord, Registry
from fanbu.serve.config import ServeConfig
from fanbu.serve.lm_config import GenerationLimits
from fanbu.serve.lm_ct2 import CT2_DIR
from fanbu.serve.lm_engine import Sampling
from fanbu.serve.lm_models import LMPool, NoRuntimeError, ServedLM, load_lm
from tests.serve.helpers import TEXTS, register_tiny_lm
from tests.serve.test_generate import sse

pytest.importorskip("ctranslate2")

MAX_TOKENS = 8


def register_exported(registry: Registry, name: str, seed: int, quantization: str = "int8") -> ModelRecord:
    """A tiny Llama registered as ``name`` with a CTranslate2 export under its ``ctranslate2/``."""
    record = register_tiny_lm(registry, name, seed=seed, hidden=64)
    export_ctranslate2(CausalLMHandle.load(record.path), Path(record.path) / CT2_DIR, quantization)
    return record


@pytest.fixture(scope="module")
def ct2_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ModelRecord]]:
    """A registry made once for the module: ``lm-ct2`` (int8 export), ``lm-f32`` (float32 export) and
    ``lm-torch`` (no export)."""
    home = tmp_path_factory.mktemp("ct2") / "home"
    registry = Registry.open(home)
    try:
        records = {
            "lm-ct2": register_exported(registry, "lm-ct2", seed=0),
            "lm-f32": register_exported(registry, "lm-f32", seed=0, quantization="float32"),
            "lm-torch": register_tiny_lm(registry, "lm-torch", seed=1, hidden=48),
        }
    finally:
        registry.close()
    return home, records


@pytest.fixture
def registry(ct2_home: tuple[Path, dict[str, ModelRecord]]) -> Iterator[Registry]:
    """The module's registry (in place of the package fixture's, which also registers classifiers)."""
    reg = Registry.open(ct2_home[0])
    yield reg
    reg.close()


@pytest.fixture
def ct2_lms(ct2_home: tuple[Path, dict[str, ModelRecord]]) -> dict[str, ModelRecord]:
    return ct2_home[1]


@pytest.fixture(scope="module")
def served(ct2_home: tuple[Path, dict[str, ModelRecord]]) -> ServedLM:
    return load_lm(ct2_home[1]["lm-ct2"])


def test_auto_picks_the_export_where_there_is_one(
    registry: Registry, ct2_lms: dict[str, ModelRecord]
) -> None:
    pool = LMPool(registry)
    assert pool.get("lm-ct2").runtime == "ctranslate2" and pool.get("lm-ct2").handle is None
    assert pool.get("lm-torch").runtime == "torch" and pool.get("lm-torch").handle is not None
    forced = LMPool(registry, GenerationLimits(runtime="torch")).get("lm-ct2")
    assert forced.runtime == "torch"


def test_ctranslate2_without_an_export_says_what_to_do(
    registry: Registry, ct2_lms: dict[str, ModelRecord]
) -> None:
    with pytest.raises(
        NoRuntimeError, match=r"generation\.runtime.*no CTranslate2 export.*ctranslate2: true"
    ):
        LMPool(registry, GenerationLimits(runtime="ctranslate2")).get("lm-torch")
    config = validate(ServeConfig, {"generation": {"runtime": "ctranslate2"}})
    assert config.generation.runtime == "ctranslate2"
    with pytest.raises(Exception, match="runtime"):
        validate(ServeConfig, {"generation": {"runtime": "onnx"}})


def test_greedy_equals_the_exports_own_greedy(served: ServedLM, ct2_lms: dict[str, ModelRecord]) -> None:
    export = CTranslate2LM(
        Path(ct2_lms["lm-ct2"].path) / CT2_DIR, CausalLMHandle.load(ct2_lms["lm-ct2"].path)
    )
    for text in TEXTS[:3]:
        prompt = served.prompt(text)
        out = served.run(prompt, Sampling(MAX_TOKENS, temperature=0.0))
        expected = export.greedy(prompt.ids, MAX_TOKENS)  # eos suppressed: the served run may stop earlier
        assert out.token_ids == expected[: len(out.token_ids)]
        assert out.finish_reason == "stop" or out.token_ids == expected
        assert out.text == served.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_logprobs_are_the_models_own_at_temperature_one(ct2_lms: dict[str, ModelRecord]) -> None:
    f32 = load_lm(ct2_lms["lm-f32"])  # a float32 export: its log-probs equal PyTorch's to float precision
    handle = CausalLMHandle.load(ct2_lms["lm-f32"].path)
    prompt = f32.prompt(TEXTS[0])
    for sampling in (Sampling(MAX_TOKENS, 0.0), Sampling(MAX_TOKENS, 2.0, 0.5, seed=1)):
        out = f32.run(prompt, sampling)
        assert len(out.logprobs) == len(out.token_ids) + (out.finish_reason == "stop")
        assert all(math.isfinite(lp) and lp <= 0.0 for lp in out.logprobs)
        ids = torch.tensor([prompt.ids + out.token_ids])  # (1, seq)
        with torch.no_grad():
            logits = handle.model(input_ids=ids).logits[0, len(prompt.ids) - 1 : -1]  # (new, vocab)
        own = torch.log_softmax(logits.float(), dim=-1).gather(1, ids[0, len(prompt.ids) :, None])[:, 0]
        n = len(out.token_ids)
        assert torch.allclose(torch.tensor(out.logprobs[:n]), own, atol=1e-3), (out.logprobs, own)


def test_seeded_sampling_repeats_under_concurrency(served: ServedLM) -> None:
    prompt = served.prompt("hello there")

    def sample(seed: int | None) -> list[int]:
        return served.run(prompt, Sampling(12, temperature=1.5, top_p=0.9, seed=seed)).token_ids

    alone = {seed: sample(seed) for seed in (3, 4)}
    assert alone[3] != alone[4]  # a random Llama at temperature 1.5 does not write one text for two seeds
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(sample, [3, None, 4, None, 3, None, 4, None]))
    assert runs[0::4] == [alone[3], alone[3]] and runs[2::4] == [alone[4], alone[4]]
    assert sample(None) not in (alone[3], alone[4])  # an unseeded request does not repeat the last seed


def test_cancelling_ends_the_generation(served: ServedLM) -> None:
    cancelled = threading.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        cancelled.set()

    out = served.run(served.prompt(TEXTS[1]), Sampling(40, temperature=1.0, seed=2), on_text, cancelled)
    assert out.finish_reason == "cancelled" and 1 <= len(out.token_ids) < 40
    assert served.run(served.prompt(TEXTS[1]), Sampling(4, 0.0), None, cancelled).token_ids == []


@pytest.fixture
def ct2_client(make_client: Callable[..., TestClient], ct2_lms: dict[str, ModelRecord]) -> TestClient:
    return make_client(models=["lm-ct2", "lm-torch"])


def test_the_server_answers_and_streams_on_ctranslate2(ct2_client: TestClient, served: ServedLM) -> None:
    body = {"model": "lm-ct2", "prompt": TEXTS[2], "max_tokens": MAX_TOKENS, "temperature": 0}
    whole = ct2_client.post("/v1/generate", json=body).json()
    alone = served.run(served.prompt(TEXTS[2]), Sampling(MAX_TOKENS, temperature=0.0))
    assert whole["model"] == "lm-ct2:v0" and whole["text"] == alone.text
    assert whole["mean_logprob"] == pytest.approx(alone.mean_logprob)
    events = sse(ct2_client.post("/v1/generate", json={**body, "stream": True}).text)
    assert events[-1] == "[DONE]"
    assert "".join(e["text"] for e in events[:-2] if isinstance(e, dict)) == whole["text"]


def test_stop_strings_end_a_ctranslate2_completion(ct2_client: TestClient) -> None:
    body = {"model": "lm-ct2", "prompt": "the", "max_tokens": 12, "temperature": 0}
    text = ct2_client.post("/v1/generate", json=body).json()["text"]
    assert len(text) >= 3, f"the tiny model wrote too little to test stop strings: {text!r}"
    stop = text[1:3]
    cut = ct2_client.post("/v1/generate", json={**body, "stop": [stop]}).json()
    assert cut["text"] == text[: text.index(stop)] and cut["finish_reason"] == "stop"
    streamed = ct2_client.post("/v1/generate", json={**body, "stop": stop, "stream": True})
    assert "".join(e["text"] for e in sse(streamed.text)[:-2] if isinstance(e, dict)) == cut["text"]


def test_seeded_sampling_repeats_through_the_server(ct2_client: TestClient) -> None:
    body = {"model": "lm-ct2", "prompt": "hello", "max_tokens": 8, "temperature": 1.5, "top_p": 0.9}
    first = ct2_client.post("/v1/generate", json={**body, "seed": 7}).json()["text"]
    assert ct2_client.post("/v1/generate", json={**body, "seed": 7}).json()["text"] == first


def test_a_cascade_with_a_ctranslate2_small_lm(
    make_client: Callable[..., TestClient], ct2_lms: dict[str, ModelRecord], served: ServedLM
) -> None:
    cascades = {
        "never": {"small": "lm-ct2", "large": "lm-torch", "threshold": -1e9},
        "always": {"small": "lm-ct2", "large": "lm-torch", "threshold": 0.0},
    }
    client = make_client(lm_cascades=cascades)
    body = {"prompt": TEXTS[0], "max_tokens": MAX_TOKENS, "temperature": 0}
    kept = client.post("/v1/generate", json={**body, "model": "never"}).json()
    expected = served.run(served.prompt(TEXTS[0]), Sampling(MAX_TOKENS, temperature=0.0))
    assert not kept["escalated"] and kept["model"] == "lm-ct2:v0" and kept["text"] == expected.text
    escalated = client.post("/v1/generate", json={**body, "model": "always"}).json()
    assert escalated["escalated"] and escalated["model"] == "lm-torch:v0"


def test_reload_keeps_the_runtime(
    make_client: Callable[..., TestClient], registry: Registry, ct2_lms: dict[str, ModelRecord]
) -> None:
    register_exported(registry, "lm-reload", seed=0)  # its own name: the module's registry is shared
    client = make_client(models=["lm-reload"])
    body = {"model": "lm-reload", "prompt": TEXTS[0], "max_tokens": MAX_TOKENS, "temperature": 0}
    assert client.post("/v1/generate", json=body).json()["model"] == "lm-reload:v0"
    v1 = register_exported(registry, "lm-reload", seed=5)
    assert client.post("/v1/models/reload", json={}).status_code == 200
    after = client.post("/v1/generate", json=body).json()
    new = load_lm(v1)
    assert new.runtime == "ctranslate2" and after["model"] == "lm-reload:v1"
    assert after["text"] == new.run(new.prompt(TEXTS[0]), Sampling(MAX_TOKENS, temperature=0.0)).text


def test_models_lists_each_lms_runtime_and_the_setting_is_honoured(
    make_client: Callable[..., TestClient], ct2_lms: dict[str, ModelRecord]
) -> None:
    auto = make_client(models=["lm-ct2", "lm-torch"]).get("/v1/models").json()["lm_routes"]
    assert auto["lm-ct2"]["runtime"] == "ctranslate2" and auto["lm-torch"]["runtime"] == "torch"
    forced = make_client(models=["lm-ct2"], generation={"runtime": "torch"}).get("/v1/models").json()
    assert forced["lm_routes"]["lm-ct2"]["runtime"] == "torch"
