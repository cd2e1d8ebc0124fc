"""The bench work directory: finished parts and kept models are reused only when made the same way."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from fanbu.bench.work import WorkDir
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
