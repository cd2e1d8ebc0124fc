"""A tiny workspace for the cycle and report tests: keyword domains as JSONL files and a tiny large v0.

Two feedback domains (``tech``, ``health``) and one held-out task (``mood``). Large v0 learns from
public texts that use only the first two signal words of each class; the private slices use all five,
so an expert fine-tuned on its private slice knows words large v0 does not.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from fanbu.models import EncoderHandle
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry
from fanbu.train import TrainConfig
from fanbu.train.classify import train_heads

TASKS: dict[str, dict[str, list[str]]] = {
    "tech": {
        "software": ["software", "program", "data", "model", "learning"],
        "hardware": ["hardware", "computer", "system", "power", "car"],
    },
    "health": {
        "disease": ["disease", "patient", "death", "body", "life"],
        "treatment": ["treatment", "drug", "doctor", "medical", "health"],
    },
    "mood": {
        "positive": ["good", "great", "excellent", "happy", "best"],
        "negative": ["bad", "poor", "terrible", "sad", "war"],
    },
}
DOMAINS, HELDOUT = ("tech", "health"), ("mood",)
FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "people", "time", "year"]


def texts(task: str, n: int, seed: int, words: int = 5) -> tuple[list[str], list[int]]:
    """``n`` balanced texts of ``task``, each two signal words (of the first ``words``) among filler."""
    classes = list(TASKS[task].values())
    rng = random.Random(f"{task}-{seed}")
    out, labels = [], []
    for index in range(n):
        label = index % len(classes)
        tokens = rng.sample(FILLER, 4) + rng.sample(classes[label][:words], 2)
        rng.shuffle(tokens)
        out.append(" ".join(tokens))
        labels.append(label)
    return out, labels


def quick(**overrides: Any) -> dict[str, Any]:
    """Loop settings for tiny runs, as a recipe mapping."""
    return {"epochs": 2, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0, "progress": False, **overrides}


def small_stages() -> list[dict[str, Any]]:
    """Derive stages for a tiny small model: a one-layer prune, then a one-epoch distillation."""
    return [
        {"prune": {"layers": 1, "heads": 1, "hidden": 16, "ffn": 0.5, "vocab": 200, "calibration": 16}},
        {"distill": {"train": quick(epochs=1)}},
    ]


def _write(path: Path, pairs: tuple[list[str], list[int]], task: str) -> str:
    names = list(TASKS[task])
    with path.open("w") as handle:
        for text, label in zip(*pairs, strict=True):
            handle.write(json.dumps({"text": text, "label": names[label]}) + "\n")
    return str(path)


def domain_files(root: Path) -> dict[str, Any]:
    """The ``data`` section of a feedback / cycle recipe over JSONL files written under ``root``."""
    sources = {}
    for task in (*DOMAINS, *HELDOUT):
        train = texts(task, 80, 1)
        sources[task] = {
            "name": task,
            "train": _write(root / f"{task}.train.jsonl", train, task),
            "validation": _write(root / f"{task}.validation.jsonl", texts(task, 24, 2), task),
            "test": _write(root / f"{task}.test.jsonl", texts(task, 30, 3), task),
            "label_names": list(TASKS[task]),
        }
    return {
        "source": "files",
        "files": [sources[d] for d in DOMAINS],
        "heldout_files": [sources[t] for t in HELDOUT],
        "max_public": 16,
        "max_validation": 24,
    }


def large_v0(registry: Registry) -> str:
    """Train a tiny large v0 on public-like texts (two signal words per class) and register it as champion."""
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    torch.manual_seed(0)
    for task in (*DOMAINS, *HELDOUT):
        handle.add_head(task, list(TASKS[task]))
    data = {task: texts(task, 24, 0, words=2) for task in (*DOMAINS, *HELDOUT)}
    train_heads(handle, data, TrainConfig(**quick(epochs=6)))
    path = registry.model_dir("large", 0)
    handle.save(path, Provenance(name="large:v0"))
    return registry.register_model(name="large", path=path, kind="encoder", status="champion").id
