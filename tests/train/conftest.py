"""A tiny multi-head text classifier and a separable toy task, independent of fanbu.models."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

VOCAB = 512


def tokenize(texts: Sequence[str], length: int = 8) -> dict[str, Tensor]:
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        words = text.split()[:length]
        for col, word in enumerate(words):
            ids[row, col] = 1 + zlib.crc32(word.encode()) % (VOCAB - 1)
            mask[row, col] = 1
    return {"input_ids": ids, "attention_mask": mask}


class TinyClassifier(nn.Module):
    def __init__(self, heads: dict[str, int], hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.dropout = nn.Dropout(0.2)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in heads.items()})

    def forward(self, input_ids: Tensor, attention_mask: Tensor, head: str) -> Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (batch, seq, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (batch, hidden)
        return self.heads[head](self.dropout(pooled))


def toy_task(n: int, seed: int, words: tuple[str, ...]) -> tuple[list[str], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(torch.randint(len(words), (1,), generator=gen))
        noise = [f"w{int(torch.randint(20, (1,), generator=gen))}" for _ in range(4)]
        texts.append(" ".join([words[label], *noise]))
        labels.append(label)
    return texts, labels


@pytest.fixture
def toy_data():
    return {
        "a": toy_task(64, 1, ("alpha", "beta")),
        "b": toy_task(48, 2, ("gamma", "delta", "eps")),
    }
