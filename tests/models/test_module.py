"""ModuleHandle: any nn.Module through a factory and a collate function."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

from fanbu.errors import ModelError
from fanbu.models import ModuleHandle, Provenance, load_handle, tiny_tokenizer
from fanbu.models.tiny import bag_of_tokens

FACTORY = "fanbu.models.tiny:bag_of_tokens"


def _collate(texts: Sequence[str]) -> dict[str, Tensor]:
    enc = tiny_tokenizer()(list(texts), padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.fixture
def handle() -> ModuleHandle:
    config = {"vocab_size": len(tiny_tokenizer()), "hidden_size": 8, "num_labels": 3, "seed": 5}
    return ModuleHandle(bag_of_tokens(**config), config, FACTORY, collate=_collate)


def test_save_load_gives_identical_outputs(handle: ModuleHandle, texts: list[str], tmp_path: Path) -> None:
    out = handle.save(tmp_path / "mod", Provenance(name="bag"))
    assert json.loads((out / "module.json").read_text())["factory"] == FACTORY
    loaded = ModuleHandle.load(out, collate=_collate)
    batch = handle.tokenize(texts)
    expected = handle.module(**batch)  # (batch, num_labels)
    assert expected.shape == (len(texts), 3)
    assert torch.allclose(loaded.module(**loaded.tokenize(texts)), expected)
    assert loaded.config == handle.config
    dispatched = load_handle(out)
    assert isinstance(dispatched, ModuleHandle)
    assert torch.allclose(dispatched.model(**batch), expected)


def test_torch_class_as_factory(tmp_path: Path) -> None:
    config = {"in_features": 4, "out_features": 4}
    linear = torch.nn.Linear(**config)
    module = ModuleHandle(linear, config, "torch.nn:Linear")
    out = module.save(tmp_path / "lin", Provenance())
    x = torch.randn(2, 4)
    assert torch.allclose(ModuleHandle.load(out).module(x), linear(x))


def test_bad_factories_are_explained() -> None:
    module = torch.nn.Linear(2, 2)
    config = {"in_features": 2, "out_features": 2}
    with pytest.raises(ModelError, match="must look like 'package.module:callable'"):
        ModuleHandle(module, config, "torch.nn.Linear")
    with pytest.raises(ModelError, match="cannot import 'fanbu_no_such_pkg'"):
        ModuleHandle(module, config, "fanbu_no_such_pkg:make")
    with pytest.raises(ModelError, match="'torch.nn' has no 'Nope'"):
        ModuleHandle(module, config, "torch.nn:Nope")
    with pytest.raises(ModelError, match="is not callable"):
        ModuleHandle(module, config, "fanbu:__version__")
    with pytest.raises(ModelError, match="config must be JSON-able"):
        ModuleHandle(module, {"dtype": torch.float32}, "torch.nn:Linear")


def test_tokenize_without_collate_says_what_to_pass() -> None:
    handle = ModuleHandle(torch.nn.Linear(2, 2), {"in_features": 2, "out_features": 2}, "torch.nn:Linear")
    with pytest.raises(ModelError, match="no collate function; pass collate="):
        handle.tokenize(["a"])


def test_weights_that_do_not_fit_the_config(handle: ModuleHandle, tmp_path: Path) -> None:
    out = handle.save(tmp_path / "mod", Provenance())
    spec = json.loads((out / "module.json").read_text())
    spec["config"]["hidden_size"] = 4
    (out / "module.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="does not fit what 'fanbu.models.tiny:bag_of_tokens' builds"):
        ModuleHandle.load(out)


def test_factory_must_return_a_module(
    handle: ModuleHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANBU_TRUSTED_FACTORIES", "builtins:dict")  # trusted, and still not a module builder
    out = handle.save(tmp_path / "mod", Provenance())
    (out / "module.json").write_text(json.dumps({"factory": "builtins:dict", "config": {}}))
    with pytest.raises(ModelError, match="returned a dict, not an nn.Module"):
        ModuleHandle.load(out)
    (out / "module.json").write_text("{}")
    with pytest.raises(ModelError, match="module.json: missing, invalid or without factory/config"):
        ModuleHandle.load(out)


@pytest.mark.parametrize("factory", ["subprocess:run", "os:system", "builtins:eval", "shutil:rmtree"])
def test_a_module_json_cannot_name_an_untrusted_callable(handle: ModuleHandle, tmp_path: Path, factory: str) -> None:
    out = handle.save(tmp_path / "m", Provenance(name="m"))
    (out / "module.json").write_text(json.dumps({"factory": factory, "config": {"args": ["touch", "pwned"]}}))
    with pytest.raises(ModelError, match="not called: decorate the function with @fanbu.models.module_factory"):
        ModuleHandle.load(out)
    assert not (Path.cwd() / "pwned").exists()


def test_a_listed_factory_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanbu.models.module import import_factory

    with pytest.raises(ModelError, match="FANBU_TRUSTED_FACTORIES"):
        import_factory("json:loads")
    monkeypatch.setenv("FANBU_TRUSTED_FACTORIES", "math:sqrt, json:loads")
    assert import_factory("json:loads") is json.loads
