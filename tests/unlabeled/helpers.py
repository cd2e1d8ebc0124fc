"""Toy source and target domains in place of the built-in corpora, and toy features."""

from __future__ import annotations

import zlib

import torch

from fanbu.data.domain import Domain, Split

SOURCE_NAMES = ("comp.graphics", "comp.windows.x", "rec.sport.hockey", "sci.med")
TARGET_NAMES = ("business", "sports", "tech")
WORDS = {"comp.graphics": "pixel", "comp.windows.x": "window", "rec.sport.hockey": "puck", "sci.med": "drug",
         "business": "market", "sports": "goal", "tech": "chip"}


def _split(names: tuple[str, ...], per_label: int, tag: str, skip: tuple[str, ...] = ()) -> Split:
    texts, labels = [], []
    for index, name in enumerate(names):
        if name in skip:
            continue
        for i in range(per_label):
            texts.append(f"{WORDS[name]} {tag} text {i}")
            labels.append(index)
    return Split(tuple(texts), tuple(labels))


def toy_domains(name: str, seed: int = 0, skip_target_train: tuple[str, ...] = ()) -> list[Domain]:
    if name == "toy-source":
        return [Domain("toy-source", "classification", _split(SOURCE_NAMES, 12, "train"),
                       _split(SOURCE_NAMES, 4, "validation"), _split(SOURCE_NAMES, 4, "test"), SOURCE_NAMES)]
    if name == "toy-target":
        train = _split(TARGET_NAMES, 10, "pool", skip_target_train)
        return [Domain("toy-target", "classification", train, _split(TARGET_NAMES, 4, "validation"),
                       _split(TARGET_NAMES, 6, "test"), TARGET_NAMES)]
    raise KeyError(name)


DIRECTION = {"pixel": 0, "window": 0, "chip": 0, "puck": 1, "goal": 1, "drug": 2, "market": 2}
TARGET_WORDS = ("market", "goal", "chip")


def toy_encode(texts: list[str]) -> torch.Tensor:
    """8-d features: a topic's class picks a direction; target texts are moved by +1 (the domain gap)."""
    rows = []
    for text in texts:
        word = text.split()[0]
        gen = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        row = torch.randn(8, generator=gen) * 0.3
        row[DIRECTION[word]] += 2.0
        if word in TARGET_WORDS:
            row += 1.0
        rows.append(row)
    return torch.stack(rows)
