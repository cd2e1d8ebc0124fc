"""EncoderClassifier and EncoderHandle on a tiny random BERT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from fanbu.errors import ModelError
from fanbu.models import EncoderHandle, Provenance, load_handle


def test_forward_shapes_per_head(encoder: EncoderHandle, texts: list[str]) -> None:
    batch = encoder.tokenize(texts)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == len(texts)
    assert encoder.model.embed(**batch).shape == (len(texts), 32)
    assert encoder.model(**batch, head="topic").shape == (len(texts), 3)
    assert encoder.model(**batch, head="sentiment").shape == (len(texts), 2)
    assert encoder.model.hidden_size == 32


def test_embedding_ignores_padding(encoder: EncoderHandle, texts: list[str]) -> None:
    encoder.model.eval()
    with torch.no_grad():
        alone = encoder.model.embed(**encoder.tokenize([texts[2]]))  # (1, hidden), no padding
        padded = encoder.model.embed(**encoder.tokenize(texts))[2:3]  # (1, hidden), padded in a batch
    assert torch.allclose(alone, padded, atol=1e-5)


def test_tokenize_truncates_to_max_length() -> None:
    handle = EncoderHandle.tiny(max_length=8)
    batch = handle.tokenize(["the " * 50, "a"])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][1].sum().item() == 3  # [CLS] a [SEP]


def test_tokenize_rejects_bad_input(encoder: EncoderHandle) -> None:
    with pytest.raises(ModelError, match="not a single string"):
        encoder.tokenize("one text")
    with pytest.raises(ModelError, match="no texts to tokenize"):
        encoder.tokenize([])
    with pytest.raises(ModelError, match="text 1 is a int, not a str"):
        encoder.tokenize(["ok", 3])  # type: ignore[list-item]


def test_unknown_head_lists_heads(encoder: EncoderHandle, texts: list[str]) -> None:
    batch = encoder.tokenize(texts)
    with pytest.raises(ModelError, match=r"unknown head 'law'; heads: topic, sentiment"):
        encoder.model(**batch, head="law")
    with pytest.raises(ModelError, match=r"unknown head 'law'; heads: topic, sentiment"):
        encoder.predict(texts, head="law")
    bare = EncoderHandle.tiny()
    with pytest.raises(ModelError, match="none yet"):
        bare.model(**bare.tokenize(texts), head="x")


def test_bad_heads_are_refused(encoder: EncoderHandle) -> None:
    with pytest.raises(ModelError, match="already exists"):
        encoder.add_head("topic", ["a", "b"])
    with pytest.raises(ModelError, match="contain no '.'"):
        encoder.add_head("a.b", ["a", "b"])
    with pytest.raises(ModelError, match="distinct"):
        encoder.add_head("dup", ["a", "a"])
    with pytest.raises(ModelError, match="num_labels must be at least 1"):
        encoder.model.add_head("empty", 0)
    assert set(encoder.labels) == {"topic", "sentiment"}


def test_predict_proba_is_a_distribution_and_restores_mode(encoder: EncoderHandle, texts: list[str]) -> None:
    encoder.model.train()
    proba = encoder.predict_proba(texts, head="topic", batch_size=3)
    assert proba.shape == (len(texts), 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert encoder.model.training
    again = encoder.predict_proba(texts, head="topic", batch_size=1)  # eval mode: no dropout noise
    assert np.allclose(proba, again, atol=1e-5)
    labels = encoder.predict(texts, head="topic")
    assert labels.shape == (len(texts),)
    assert np.array_equal(labels, proba.argmax(axis=1))
    assert encoder.predict_proba([], head="sentiment").shape == (0, 2)
    with pytest.raises(ModelError, match="batch_size must be at least 1"):
        encoder.predict_proba(texts, head="topic", batch_size=0)


def test_encode_gives_features_and_logits_in_the_order_given(
    encoder: EncoderHandle, texts: list[str]
) -> None:
    encoder.model.train()
    features, logits = encoder.encode(texts, ["topic", "sentiment"], batch_size=2)
    assert encoder.model.training  # the mode is restored
    assert features.shape == (len(texts), 32) and features.dtype == torch.float32
    assert {h: t.shape for h, t in logits.items()} == {"topic": (len(texts), 3), "sentiment": (len(texts), 2)}
    encoder.model.eval()
    with torch.no_grad():
        one = encoder.model.embed(**encoder.tokenize([texts[1]]))  # (1, hidden), alone in its batch
    assert torch.allclose(features[1:2], one, atol=1e-5)  # row 1 is text 1 despite the length order
    proba = encoder.predict_proba(texts, head="topic")
    assert np.allclose(torch.softmax(logits["topic"], dim=-1).numpy(), proba, atol=1e-5)
    alone, none = encoder.encode(texts[:2])
    assert none == {} and torch.allclose(alone, features[:2], atol=1e-5)
    empty, heads = encoder.encode([], ["topic"])
    assert empty.shape == (0, 32) and heads["topic"].shape == (0, 3)
    with pytest.raises(ModelError, match="unknown heads"):
        encoder.encode(texts, ["weather"])


def test_tiny_is_seeded() -> None:
    a, b, c = EncoderHandle.tiny(seed=3), EncoderHandle.tiny(seed=3), EncoderHandle.tiny(seed=4)
    wa, wb, wc = (h.model.encoder.embeddings.word_embeddings.weight for h in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_save_load_gives_identical_outputs(
    encoder: EncoderHandle, texts: list[str], provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    loaded = EncoderHandle.load(out)
    assert loaded.labels == encoder.labels
    assert loaded.max_length == encoder.max_length
    assert loaded.provenance == provenance
    for head in ("topic", "sentiment"):
        assert np.allclose(encoder.predict_proba(texts, head), loaded.predict_proba(texts, head), atol=1e-6)
    assert isinstance(load_handle(out), EncoderHandle)


def test_saved_encoder_loads_with_plain_transformers(
    encoder: EncoderHandle, texts: list[str], provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    plain = AutoModel.from_pretrained(out, use_safetensors=True).eval()
    encoder.model.eval()
    batch = encoder.tokenize(texts)
    with torch.no_grad():
        hidden = plain(**batch).last_hidden_state  # (batch, seq, hidden)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (batch, seq, 1)
        expected = (hidden * mask).sum(1) / mask.sum(1)  # (batch, hidden)
        assert torch.allclose(encoder.model.embed(**batch), expected, atol=1e-5)


def test_save_refuses_to_overwrite(encoder: EncoderHandle, provenance: Provenance, tmp_path: Path) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    with pytest.raises(ModelError, match="already exists; choose another path or pass overwrite=True"):
        encoder.save(out, provenance)
    encoder.add_head("extra", ["x", "y"])
    encoder.save(out, provenance, overwrite=True)
    assert "extra" in EncoderHandle.load(out).labels
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_plain_hf_directory_loads_through_from_source(
    encoder: EncoderHandle, texts: list[str], provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(out / name, plain / name)
    handle = EncoderHandle.from_source(str(plain), max_length=64)
    assert handle.labels == {}
    encoder.model.eval()
    batch = encoder.tokenize(texts)
    with torch.no_grad():
        assert torch.allclose(handle.model.embed(**batch), encoder.model.embed(**batch), atol=1e-5)
    with pytest.raises(ModelError, match="not a fanbu model directory"):
        EncoderHandle.load(plain)


def test_from_source_checks_max_length(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    with pytest.raises(ModelError, match="max_length 100 exceeds the model's max_position_embeddings 64"):
        EncoderHandle.from_source(str(out), max_length=100)


def test_missing_heads_file_is_reported(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    (out / "heads.safetensors").unlink()
    with pytest.raises(ModelError, match=r"heads\.safetensors.*missing"):
        EncoderHandle.load(out)


def test_max_length_must_be_positive(encoder: EncoderHandle, provenance: Provenance, tmp_path: Path) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    with pytest.raises(ModelError, match="max_length must be at least 1, got 0"):
        EncoderHandle.from_source(str(out), max_length=0)


def test_heads_and_labels_must_agree(encoder: EncoderHandle) -> None:
    with pytest.raises(ModelError, match=r"heads and label names disagree on \['sentiment'\]"):
        EncoderHandle(encoder.model, encoder.tokenizer, {"topic": ["sci", "talk", "rec"]})


def test_edited_handle_json_is_reported(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    settings = json.loads((out / "handle.json").read_text())
    settings["labels"]["topic"].append("extra")
    (out / "handle.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError, match=r"heads\.safetensors: does not match handle\.json"):
        EncoderHandle.load(out)
    (out / "handle.json").write_text(json.dumps({"labels": {}}))
    with pytest.raises(ModelError, match="handle.json: needs max_length, dropout and labels"):
        EncoderHandle.load(out)
    (out / "handle.json").unlink()
    with pytest.raises(ModelError, match="handle.json: missing or not valid JSON"):
        EncoderHandle.load(out)


def test_heads_file_missing_from_record_and_disk(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    record = json.loads((out / "fanbu.json").read_text())
    del record["weights"]["heads.safetensors"]
    (out / "fanbu.json").write_text(json.dumps(record))
    (out / "heads.safetensors").unlink()
    with pytest.raises(
        ModelError, match=r"heads\.safetensors: missing but handle\.json lists heads; re-save"
    ):
        EncoderHandle.load(out)
