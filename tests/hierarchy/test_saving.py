"""Saving and loading an adapter stack (safetensors + JSON, with provenance)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fanbu.errors import ModelError
from fanbu.hierarchy.saving import KIND, load_stack, save_stack
from fanbu.hierarchy.tree import DomainTree
from fanbu.hierarchy.trunks import MeanPooled
from fanbu.models import artefact
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle

from .conftest import make_stack


@pytest.fixture(autouse=True)
def _stack_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until ``adapter_stack`` joins :data:`fanbu.models.artefact.KINDS` (glue), register it here."""
    if KIND not in artefact.KINDS:
        monkeypatch.setattr(artefact, "KINDS", (*artefact.KINDS, KIND))


def test_round_trip(handle: EncoderHandle, tree: DomainTree, tmp_path: Path, one_thread) -> None:
    stack = make_stack(handle, tree)
    with torch.no_grad():
        stack.heads[stack.head_key("tech", "tech")].weight.add_(1.0)
    save_stack(stack, tmp_path / "stack", Provenance(name="tree"))
    again = load_stack(tmp_path / "stack", MeanPooled(handle.model.encoder)).eval()
    inputs = handle.tokenize(["the game was great", "software"])
    with torch.no_grad():
        for node, leaf in (("sport.ball", "sport.ball"), ("tech", "tech"), ("sport", "sport.race")):
            assert torch.allclose(again(node, leaf, **inputs), stack(node, leaf, **inputs), atol=1e-6)
    assert again.tree.describe() == stack.tree.describe()
    stack.drop("tech")
    with pytest.raises(ModelError, match="merged or dropped adapters"):
        save_stack(stack, tmp_path / "other", Provenance())
