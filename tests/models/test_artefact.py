"""Provenance, model cards, weight checks and load_handle dispatch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import fanbu
from fanbu.errors import ModelError
from fanbu.io import sha256_file
from fanbu.models import (
    EncoderHandle,
    Provenance,
    load_handle,
    read_provenance,
    verify_weights,
    write_provenance,
)


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_saved_directory_has_provenance_card_and_recipe(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    record = json.loads((out / "fanbu.json").read_text())
    assert record["kind"] == "encoder"
    assert record["provenance"]["parents"] == ["gen0-abc"]
    assert record["provenance"]["fanbu_version"] == fanbu.__version__
    assert record["weights"] == {
        "heads.safetensors": sha256_file(out / "heads.safetensors"),
        "model.safetensors": sha256_file(out / "model.safetensors"),
    }
    card = (out / "README.md").read_text()
    front = _front_matter(card)
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["base_model_relation"] == "finetune"
    assert front["library_name"] == "transformers"
    assert front["tags"][:2] == ["fanbu", "encoder"]
    assert "# med-small" in card
    assert "`gen0-abc`" in card
    assert "med: `sha256:1234`" in card
    assert "| med.accuracy | 0.75 |" in card
    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text()) == provenance.recipe
    assert read_provenance(out) == (provenance, "encoder")


def test_card_without_base_model_omits_those_fields(tmp_path: Path) -> None:
    write_provenance(tmp_path, Provenance(), "module")
    front = _front_matter((tmp_path / "README.md").read_text())
    assert "base_model" not in front
    assert "base_model_relation" not in front
    assert front["library_name"] == "pytorch"
    assert front["tags"] == ["fanbu", "module"]
    assert json.loads((tmp_path / "fanbu.json").read_text())["weights"] == {}


def test_bad_relation_and_kind_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="base_model_relation 'distilled' is not one of finetune, adapter"):
        Provenance(base_model="x/y", base_model_relation="distilled")
    with pytest.raises(
        ModelError, match="unknown model kind 'rnn'; expected one of encoder, moe, lora, causal_lm, module"
    ):
        write_provenance(tmp_path, Provenance(), "rnn")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_weights_name_the_file(
    damage: str, encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    expected = rf"{re.escape(str(weights))}: corrupt or truncated .*re-save"
    with pytest.raises(ModelError, match=expected):
        verify_weights(out)
    with pytest.raises(ModelError, match=expected):
        EncoderHandle.load(out)
    with pytest.raises(ModelError, match=expected):
        load_handle(out)


def test_truncated_weights_without_fanbu_json_name_the_file(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    (out / "fanbu.json").unlink()
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(
        ModelError, match=rf"{re.escape(str(weights))}: not a readable safetensors file .*restore the file"
    ):
        EncoderHandle.from_source(str(out), max_length=64)


def test_missing_weights_file_is_reported(
    encoder: EncoderHandle, provenance: Provenance, tmp_path: Path
) -> None:
    out = encoder.save(tmp_path / "enc", provenance)
    (out / "model.safetensors").unlink()
    with pytest.raises(
        ModelError, match=r"model\.safetensors: listed in fanbu\.json but missing"
    ):
        verify_weights(out)


def test_missing_or_invalid_fanbu_json(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fanbu.json: not found, so .* is not a fanbu model directory"):
        read_provenance(tmp_path)
    (tmp_path / "fanbu.json").write_text("{not json")
    with pytest.raises(ModelError, match="fanbu.json: not valid JSON"):
        read_provenance(tmp_path)
    (tmp_path / "fanbu.json").write_text(json.dumps({"kind": "encoder"}))
    with pytest.raises(ModelError, match="missing 'kind', 'provenance' or 'weights'"):
        read_provenance(tmp_path)
    (tmp_path / "fanbu.json").write_text(
        json.dumps({"kind": "encoder", "provenance": {"bogus": 1}, "weights": {}})
    )
    with pytest.raises(ModelError, match=r"unexpected provenance fields \['bogus'\]"):
        read_provenance(tmp_path)
    (tmp_path / "fanbu.json").write_text(json.dumps({"kind": "svm", "provenance": {}, "weights": {}}))
    with pytest.raises(ModelError, match="unknown kind 'svm'"):
        load_handle(tmp_path)


def test_provenance_survives_a_round_trip(provenance: Provenance, tmp_path: Path) -> None:
    write_provenance(tmp_path, provenance, "causal_lm")
    loaded, kind = read_provenance(tmp_path)
    assert kind == "causal_lm"
    assert loaded == provenance
    assert loaded.to_dict()["metrics"] == {"med": {"accuracy": 0.75}}
