"""The workspace: references, loading any kind, saving and registering from fanbu.json, runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fanbu.config import RESOLVED_RECIPE
from fanbu.errors import ConfigError, FanbuError, RegistryError
from fanbu.models import EncoderHandle, MoEHandle, Provenance, read_provenance
from fanbu.models.moe_layers import to_moe
from fanbu.registry import Registry
from fanbu.registry.workspace import UnknownModelError, Workspace, parse_ref
from fanbu.train import TrainConfig


def _tiny() -> EncoderHandle:
    handle = EncoderHandle.tiny(seed=0)
    handle.add_head("topic", ["a", "b"])
    return handle


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "home")


def test_references_parse_and_resolve(workspace: Workspace) -> None:
    assert parse_ref("large") == ("large", None)
    assert parse_ref("large:v3") == parse_ref("large:3") == ("large", 3)
    with pytest.raises(UnknownModelError, match="use name or name:vN"):
        parse_ref("large:v")
    with pytest.raises(UnknownModelError, match="no registered model has this name"):
        workspace.resolve("large")
    first = workspace.save_and_register(_tiny(), Provenance(), name="large", status="champion")
    second = workspace.save_and_register(_tiny(), Provenance(parents=[first.id]), name="large")
    assert (first.id, second.id) == ("large:v0", "large:v1")
    assert workspace.resolve("large").id == "large:v1"  # the latest version
    assert workspace.resolve("large:0").id == "large:v0"
    assert workspace.champion("large").id == "large:v0"
    with pytest.raises(ConfigError, match="is 'candidate'; name the current champion"):
        workspace.champion("large:v1")
    with pytest.raises(UnknownModelError, match="large:v9: this version is not registered"):
        workspace.resolve("large:v9")
    assert isinstance(UnknownModelError("x"), RegistryError)


def test_save_and_register_registers_from_the_saved_provenance(workspace: Workspace) -> None:
    root = workspace.save_and_register(_tiny(), Provenance(), name="large", status="champion")
    provenance = Provenance(
        recipe={"stage": "finetune"}, parents=[root.id], data_fingerprints={"train": "abc"}, base_model=root.id
    )
    record = workspace.save_and_register(
        _tiny(), provenance, name="comp.finetune", relation="finetune", metadata={"seconds": 1.5}
    )
    saved, kind = read_provenance(Path(record.path))
    assert saved.name == "comp.finetune:v0" and kind == record.kind == "encoder"
    assert record.parents == tuple(saved.parents) == (root.id,)
    assert record.relation == "finetune" and record.recipe == saved.recipe == {"stage": "finetune"}
    assert record.fingerprints == saved.data_fingerprints and record.metadata == {"seconds": 1.5}
    assert record.status == "candidate"


def test_load_dispatches_on_the_kind_an_moe_included(workspace: Workspace) -> None:
    dense = _tiny()
    workspace.save_and_register(dense, Provenance(), name="large", status="champion")
    moe = _tiny()
    to_moe(moe.model.encoder, [{}, {}], top_k=1)
    handle = MoEHandle(moe.model, moe.tokenizer, moe.labels, moe.max_length, truncation="head_tail", experts=["x", "y"])
    record = workspace.save_and_register(handle, Provenance(), name="large")
    assert record.kind == "moe"
    loaded = workspace.load("large")
    assert isinstance(loaded, MoEHandle) and loaded.truncation == "head_tail"  # saved with its settings
    assert isinstance(workspace.load_encoder("large:v0"), EncoderHandle)
    texts = ["alpha beta", "gamma"]
    dense_copy = loaded.densify()
    assert not isinstance(dense_copy, MoEHandle) and dense_copy.predict_proba(texts, "topic").shape == (2, 2)
    with pytest.raises(Exception, match="holds a 'moe' model, not 'encoder'"):
        EncoderHandle.load(record.path)


def test_a_run_records_success_with_its_summary_and_failure_once(workspace: Workspace) -> None:
    with workspace.run("derive", TrainConfig(epochs=1)) as run:
        run.summary = {"made": ["x"]}
    record = workspace.registry.get_run(run.id)
    environment = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    assert record.status == "succeeded" and record.summary == {"made": ["x"], "environment": environment}
    assert yaml.safe_load((run.dir / RESOLVED_RECIPE).read_text())["epochs"] == 1
    with pytest.raises(ValueError, match="boom"), workspace.run("feedback", {"a": 1}) as failing:
        raise ValueError("boom")
    failed = workspace.registry.get_run(failing.id)
    assert failed.status == "failed"
    assert failed.summary == {"error": "ValueError: boom", "environment": environment}
    with workspace.run("derive", {}) as own:
        own.summary = {"environment": {"threads": 3}}  # a summary that records its own is kept
    assert workspace.registry.get_run(own.id).summary == {"environment": {"threads": 3}}


def test_a_workspace_needs_a_home_for_artefacts(tmp_path: Path) -> None:
    workspace = Workspace(Registry(f"sqlite:///{tmp_path}/r.db"))
    with pytest.raises(FanbuError, match="home directory"), workspace.run("derive", {}):
        pass


def test_a_refused_registration_leaves_no_directory(workspace: Workspace) -> None:
    with pytest.raises(RegistryError, match="relation"):
        workspace.save_and_register(_tiny(), Provenance(), name="large", relation="adopted")
    with pytest.raises(RegistryError, match="unknown parent"):
        workspace.save_and_register(_tiny(), Provenance(parents=["ghost:v0"]), name="large")
    assert not (workspace.home / "models" / "large" / "v0").exists()
    assert workspace.registry.list_models() == []


def test_a_registered_lora_adapter_loads_onto_its_base(workspace: Workspace) -> None:
    import torch

    from fanbu.derive.finetune import LoraSettings, add_lora, save_adapter
    from fanbu.models import load_handle

    base = workspace.save_and_register(_tiny(), Provenance(), name="large", status="champion")
    adapted = workspace.load_encoder(base)
    adapted.model.encoder = add_lora(adapted.model.encoder, LoraSettings(r=2, dropout=0.0))
    with torch.no_grad():
        for name, parameter in adapted.model.encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_()  # a trained-looking update, so the adapter changes the outputs
    provenance = Provenance(parents=[base.id], base_model=base.id, base_model_relation="adapter")
    record = workspace.save_and_register(
        adapted,
        provenance,
        name="comp.finetune",
        relation="adapter",
        save=lambda path, prov: save_adapter(adapted, path, prov),
    )
    assert record.kind == "lora"
    texts = ["alpha beta", "gamma delta epsilon"]
    loaded = workspace.load_encoder("comp.finetune")
    expected = adapted.predict_proba(texts, "topic")
    assert np.allclose(loaded.predict_proba(texts, "topic"), expected, atol=1e-5)
    assert not np.allclose(workspace.load_encoder(base).predict_proba(texts, "topic"), expected, atol=1e-3)
    with pytest.raises(Exception, match="is a LoRA adapter: load it with Workspace.load"):
        load_handle(record.path)
