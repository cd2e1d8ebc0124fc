"""The bench work directory: finished parts and kept models are reused only when made the same way."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.models.encoder import EncoderHandle


def _store(root) -> WorkDir:
    return WorkDir(root, Console(file=io.StringIO(), width=200))


def _maker(calls: list[int]):
    def make() -> EncoderHandle:
        calls.append(1)
        handle = EncoderHandle.tiny(
            hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=len(calls)
        )
        handle.add_head("t", ["a", "b"])
        return handle

    return make


def test_a_kept_model_is_reused_only_with_the_same_settings(tmp_path) -> None:
    store, calls = _store(tmp_path), []
    first = store.model("m", _maker(calls), 16, {"lr": 1e-4})
    again = store.model("m", _maker(calls), 16, {"lr": 1e-4})
    assert len(calls) == 1  # loaded, not made again
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    store.model("m", _maker(calls), 16, {"lr": 2e-4})
    assert len(calls) == 2  # other settings: made again
    store.model("m", _maker(calls), 16, {"lr": 2e-4})
    assert len(calls) == 2  # and the new record is kept


def test_a_model_kept_without_a_record_is_made_again_when_settings_are_given(tmp_path) -> None:
    store, calls = _store(tmp_path), []
    store.model("m", _maker(calls), 16)  # an older work dir: no settings recorded
    store.model("m", _maker(calls), 16)
    assert len(calls) == 1
    store.model("m", _maker(calls), 16, {"seed": 0})
    assert len(calls) == 2
    (tmp_path / "models" / "m.settings.json").write_text("not json")  # a damaged record
    store.model("m", _maker(calls), 16, {"seed": 0})
    assert len(calls) == 3


def test_source_fingerprint_follows_the_code(tmp_path, monkeypatch) -> None:
    package = tmp_path / "pkgfp"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_fingerprint("pkgfp")
    assert source_fingerprint("pkgfp") == first  # stable
    (package / "notes.txt").write_text("not code")
    assert source_fingerprint("pkgfp") == first  # only Python source counts
    (package / "sub" / "mod.py").write_text("X = 2\n")
    assert source_fingerprint("pkgfp") != first
    assert source_fingerprint("fanbu.train") != source_fingerprint("fanbu.models")
    with pytest.raises(ValueError, match="no package"):
        source_fingerprint("pkgfp_missing")


def test_a_module_is_fingerprinted_alone_and_a_package_with_everything_under_it(
    tmp_path, monkeypatch
) -> None:
    package = tmp_path / "pkgmod"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("A = 1\n")
    (package / "b.py").write_text("B = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module, whole = source_fingerprint("pkgmod.a"), source_fingerprint("pkgmod")
    (package / "b.py").write_text("B = 2\n")
    assert source_fingerprint("pkgmod.a") == module  # a sibling module is not part of it
    assert source_fingerprint("pkgmod") != whole
    (package / "a.py").write_text("A = 2\n")
    assert source_fingerprint("pkgmod.a") != module
