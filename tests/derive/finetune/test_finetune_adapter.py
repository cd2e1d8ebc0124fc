"""save_adapter / load_adapter: PEFT safetensors files, provenance, identical outputs after reload."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from finetune_helpers import LABELS, quick
from peft import PeftModel
from safetensors import safe_open

from fanbu.derive.finetune import FinetuneConfig, LoraSettings, finetune, load_adapter, save_adapter
from fanbu.errors import ModelError
from fanbu.models import EncoderHandle, Provenance, read_provenance, verify_weights


def logits(handle: EncoderHandle, texts: list[str]) -> torch.Tensor:
    handle.model.eval()
    with torch.no_grad():
        return handle.model(**handle.tokenize(texts), head="sentiment")


@pytest.fixture
def adapted(encoder, task_data) -> tuple[EncoderHandle, EncoderHandle]:
    """A LoRA-tuned, unmerged handle and an untouched copy of its base."""
    base = copy.deepcopy(encoder)
    config = FinetuneConfig(mode="lora", lora=LoraSettings(r=4, alpha=8, merge=False), train=quick(lr=1e-2))
    finetune(encoder, {"sentiment": task_data["train"]}, config)
    return encoder, base


def provenance() -> Provenance:
    return Provenance(recipe={"finetune": {"mode": "lora"}}, parents=["large-v0"], base_model="tiny-bert")


def test_adapter_round_trip_gives_identical_outputs(adapted, task_data, tmp_path) -> None:
    handle, base = adapted
    texts = task_data["heldout"][0][:10]
    expected = logits(handle, texts)
    path = save_adapter(handle, tmp_path / "adapter", provenance())
    base_state = {k: v.clone() for k, v in base.model.encoder.state_dict().items()}
    loaded = load_adapter(base, path)
    assert isinstance(loaded.model.encoder, PeftModel)
    assert loaded.labels == {"sentiment": LABELS} and loaded.max_length == handle.max_length
    assert torch.allclose(logits(loaded, texts), expected, atol=1e-6)
    assert all(torch.equal(base.model.encoder.state_dict()[k], v) for k, v in base_state.items())  # untouched
    assert not isinstance(base.model.encoder, PeftModel)


def test_adapter_files_are_safetensors_with_adapter_provenance(adapted, tmp_path) -> None:
    handle, _ = adapted
    path = save_adapter(handle, tmp_path / "adapter", provenance())
    names = {p.name for p in path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "heads.safetensors", "handle.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and all("lora_" in k for k in keys)  # only the adapter, not the base weights
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    recorded, kind = read_provenance(path)
    assert kind == "lora" and recorded.base_model_relation == "adapter"
    assert recorded.parents == ["large-v0"]
    verify_weights(path)  # checksums recorded for both safetensors files
    assert "base_model_relation: adapter" in (path / "README.md").read_text()


def test_save_adapter_needs_an_adapter(encoder, tmp_path) -> None:
    with pytest.raises(ModelError, match="carries no LoRA adapter.*lora.merge: false"):
        save_adapter(encoder, tmp_path / "adapter", provenance())


def test_load_adapter_errors(adapted, tmp_path) -> None:
    handle, base = adapted
    plain = base.save(tmp_path / "plain", provenance())
    with pytest.raises(ModelError, match="not a saved adapter; load it with fanbu.models.load_handle"):
        load_adapter(base, plain)
    path = save_adapter(handle, tmp_path / "adapter", provenance())
    with pytest.raises(ModelError, match="base encoder already carries an adapter"):
        load_adapter(handle, path)
    wider = EncoderHandle.tiny(hidden_size=48, num_layers=2, num_heads=4, seed=0)
    with pytest.raises(ModelError, match="adapter does not fit the base encoder"):
        load_adapter(wider, path)
