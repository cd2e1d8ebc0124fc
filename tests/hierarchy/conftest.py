"""A tiny tree, a tiny encoder stack and tiny labelled data for the hierarchy tests."""

from __future__ import annotations

import pytest
import torch

from fanbu.hierarchy.data import Examples, LeafData
from fanbu.hierarchy.stack import AdapterSettings, AdapterStack
from fanbu.hierarchy.tree import DomainTree
from fanbu.hierarchy.trunks import MeanPooled
from fanbu.models.encoder import EncoderHandle

TEXTS = {
    "sport.ball": (["the game was great", "team won the game"], ["the sport team lost", "poor game today"]),
    "sport.race": (["car race fast", "the car won"], ["water race swim", "swim team in water"]),
    "tech": (["computer software bug", "new software program"], ["hardware is slow", "buy new hardware"]),
}


@pytest.fixture
def handle() -> EncoderHandle:
    return EncoderHandle.tiny(hidden_size=16, num_layers=1, intermediate_size=32, max_length=16)


@pytest.fixture
def tree() -> DomainTree:
    """Two levels of groups: sport.ball and sport.race under sport (under topics), tech under topics."""
    return DomainTree({"topics": None, "sport": "topics"}, {"sport.ball": "sport", "sport.race": "sport",
                                                             "tech": "topics"})


def make_stack(handle: EncoderHandle, tree: DomainTree, random_b: bool = True) -> AdapterStack:
    """A stack on the tiny encoder; ``random_b`` makes every adapter's delta non-zero."""
    labels = {leaf: ["a", "b"] for leaf in tree.leaves}
    stack = AdapterStack(MeanPooled(handle.model.encoder), tree, labels, AdapterSettings(rank=2), seed=0)
    if random_b:
        generator = torch.Generator().manual_seed(1)
        for name, param in stack.peft.named_parameters():
            if "lora_B" in name:
                param.data = torch.randn(param.shape, generator=generator) * 0.2
    return stack.eval()


def leaf_data(handle: EncoderHandle) -> dict[str, LeafData]:
    """Each leaf's two classes, the same texts for training and validation."""
    out = {}
    for leaf, (first, second) in TEXTS.items():
        examples = Examples(handle.tokenize(first + second), torch.tensor([0] * len(first) + [1] * len(second)))
        out[leaf] = LeafData(examples, examples)
    return out
