"""The packaged real models: MiniLM (fast) and SmolLM2 from GGUF (about 30 s)."""

from __future__ import annotations

import pytest
import torch

from fanbu.models import CausalLMHandle, EncoderHandle

pytestmark = pytest.mark.integration


def test_packaged_minilm_gives_384_dim_embeddings() -> None:
    handle = EncoderHandle.from_source("package:all-MiniLM-L6-v2", max_length=128)
    assert handle.model.hidden_size == 384
    assert handle.labels == {}
    handle.model.eval()
    with torch.no_grad():
        emb = handle.model.embed(**handle.tokenize(["a cat sits on the mat", "a kitten on a rug", "tax law"]))
    assert emb.shape == (3, 384)
    sim = torch.nn.functional.cosine_similarity
    assert sim(emb[0:1], emb[1:2]) > sim(emb[0:1], emb[2:3])  # a real model, not random weights
    handle.add_head("topic", ["a", "b"])
    assert handle.predict_proba(["hello"], head="topic").shape == (1, 2)


def test_packaged_smollm2_gguf_gives_finite_logits() -> None:
    handle = CausalLMHandle.from_source("package:SmolLM2-135M-Instruct", max_length=32)
    config = handle.model.config
    assert (config.num_hidden_layers, config.num_key_value_heads) == (30, 3)
    assert handle.model.dtype == torch.float32
    assert handle.tokenizer.pad_token is not None
    batch = handle.tokenize(["The capital of France is", "Hello"])
    with torch.no_grad():
        logits = handle.model(**batch).logits  # (batch, seq, vocab)
    assert logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(logits).all()
    assert not getattr(handle.model, "is_quantized", False)  # dense float32: trainable and saveable


def test_fast_tokenization_matches_hugging_face_on_real_posts() -> None:
    from fanbu.data.builtin import newsgroups20_domains
    from fanbu.models.tokenize import encode_texts

    handle = EncoderHandle.from_source("package:all-MiniLM-L6-v2", max_length=128)
    texts = list(newsgroups20_domains()[0].train.texts[:300])
    for max_length in (128, 256):
        ids, mask = encode_texts(handle.tokenizer, texts, max_length)
        ref = handle.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        assert (ids == ref["input_ids"]).all() and (mask == ref["attention_mask"]).all()
