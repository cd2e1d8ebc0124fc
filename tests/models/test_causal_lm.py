"""CausalLMHandle on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fanbu.errors import ModelError
from fanbu.models import CausalLMHandle, Provenance, load_handle, tiny_tokenizer


def test_tiny_forward(causal_lm: CausalLMHandle, texts: list[str]) -> None:
    batch = causal_lm.tokenize(texts)
    logits = causal_lm.model(**batch).logits  # (batch, seq, vocab)
    assert logits.shape == (*batch["input_ids"].shape, len(causal_lm.tokenizer))
    assert torch.isfinite(logits).all()
    config = causal_lm.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (2, 4, 2)
    assert causal_lm.tokenizer.pad_token_id == config.pad_token_id


def test_save_load_gives_identical_logits(
    causal_lm: CausalLMHandle, texts: list[str], provenance: Provenance, tmp_path: Path
) -> None:
    out = causal_lm.save(tmp_path / "lm", provenance)
    loaded = CausalLMHandle.load(out)
    assert isinstance(load_handle(out), CausalLMHandle)
    assert loaded.max_length == causal_lm.max_length
    batch = causal_lm.tokenize(texts)
    assert torch.equal(batch["input_ids"], loaded.tokenize(texts)["input_ids"])
    causal_lm.model.eval()
    with torch.no_grad():
        assert torch.allclose(causal_lm.model(**batch).logits, loaded.model(**batch).logits, atol=1e-6)


def test_pad_token_falls_back_to_eos() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            pad_token_id=None,
        )
    )
    handle = CausalLMHandle(model, tokenizer, max_length=32)
    assert handle.tokenizer.pad_token == handle.tokenizer.eos_token == "[SEP]"
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert handle.tokenize(["hello", "hello world"])["input_ids"].shape == (2, 4)


def test_plain_hf_directory_loads_through_from_source(
    causal_lm: CausalLMHandle, texts: list[str], provenance: Provenance, tmp_path: Path
) -> None:
    out = causal_lm.save(tmp_path / "lm", provenance)
    (out / "fanbu.json").unlink()
    handle = CausalLMHandle.from_source(str(out), max_length=64)
    batch = handle.tokenize(texts)
    causal_lm.model.eval()
    with torch.no_grad():
        assert torch.allclose(handle.model(**batch).logits, causal_lm.model(**batch).logits, atol=1e-6)
    assert handle.model.dtype == torch.float32


def test_load_refuses_another_kind(causal_lm: CausalLMHandle, provenance: Provenance, tmp_path: Path) -> None:
    out = causal_lm.save(tmp_path / "lm", provenance)
    with pytest.raises(ModelError, match="holds a 'causal_lm' model, not 'encoder'; load it with"):
        from fanbu.models import EncoderHandle

        EncoderHandle.load(out)


def test_missing_handle_json_is_reported(
    causal_lm: CausalLMHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = causal_lm.save(tmp_path / "lm", provenance)
    (out / "handle.json").unlink()
    with pytest.raises(ModelError, match=r"handle\.json: missing or without max_length"):
        CausalLMHandle.load(out)


def test_local_gguf_path_resolves_to_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m.gguf"
    target.parent.mkdir()
    for content in (b"GGUF", b"not a gguf file at all"):  # truncated, then wrong magic
        target.write_bytes(content)
        with pytest.raises(ModelError, match=r"models/m\.gguf: cannot load a model from it"):
            CausalLMHandle.from_source(str(target))


def test_tokenizer_without_pad_or_eos_is_refused() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    model = CausalLMHandle.tiny().model
    model.config.pad_token_id = None
    with pytest.raises(ModelError, match="neither a pad nor an eos token; set tokenizer.pad_token first"):
        CausalLMHandle(model, tokenizer)
