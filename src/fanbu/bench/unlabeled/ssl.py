"""The ``ssl`` section of ``fanbu bench unlabeled``: does self-supervised continued pretraining on a domain's
unlabeled text help its model when labels are few?

Per seed and domain: the domain's private slice is its unlabeled pool (labels dropped); its first
``labels`` examples (100, and the whole loaded slice) are the labelled set. The large model (a fresh
head) is fine-tuned on the labelled set as it is, and after the derive stage ``ssl`` on the pool with
each objective (masked LM, SimCSE): the derive recipe ``[ssl, finetune, ...]`` against ``[finetune,
...]``, the same finetune settings, data and steps. Fine-tuning keeps its best epoch on the domain's
validation split; the test split is scored once per model. Which objective is reported as the headline
is chosen on the mean validation accuracy, never on test.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from fanbu.config import Strict
from fanbu.data.slices import domain_names
from fanbu.derive.data import DeriveData, DomainData, load_domain_data
from fanbu.derive.finetune import FinetuneConfig
from fanbu.derive.stages import STAGES, SSLStageConfig, StageContext
from fanbu.errors import ConfigError
from fanbu.models.encoder import EncoderHandle, keep_head
from fanbu.train.config import TrainConfig
from fanbu.train.selfsup import SSLConfig

LoadBase = Callable[[str, int], EncoderHandle]
"""(source, max_length) -> the large model the section starts from (a seam for tests)."""


class SSLBenchConfig(Strict):
    """What the ``ssl`` section runs."""

    model: str = Field("package:all-MiniLM-L6-v2", description="The large model every run starts from.")
    data: DeriveData = Field(
        default_factory=lambda: DeriveData(source="default", max_validation=100, max_test=400),
        description="Domains and slices (max_train caps the pool and the full label count).",
    )
    max_length: int = Field(64, ge=8)
    labels: list[int | None] = Field(
        default_factory=lambda: [100, None],
        description="Labelled examples per domain; null: the whole loaded private slice.",
    )
    objectives: list[str] = Field(default_factory=lambda: ["mlm", "simcse"])
    ssl: SSLConfig = Field(default_factory=lambda: SSLConfig(steps=100), description="Pretraining settings.")
    finetune: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=5, batch_size=16, lr=5e-5, progress=False),
        description="The finetune stage's loop, with and without pretraining.",
    )


def _accuracy(handle: EncoderHandle, head: str, pairs: tuple[Sequence[str], Sequence[int]]) -> float:
    texts, gold = pairs
    return float(np.mean(handle.predict(list(texts), head, batch_size=64) == np.asarray(gold)))


def _finetune(start: EncoderHandle, data: DomainData, config: SSLBenchConfig, seed: int, work: Path) -> dict[str, float]:
    handle = copy.deepcopy(start)
    stage = FinetuneConfig(train=config.finetune)
    out = STAGES["finetune"].run(handle, StageContext(data, None, work, seed), stage)
    return {"validation_acc": _accuracy(out.handle, data.name, data.validation),
            "test_acc": _accuracy(out.handle, data.name, data.test)}


def _labelled(data: DomainData, count: int | None) -> DomainData:
    texts, labels = data.train
    if count is not None and count > len(texts):
        raise ConfigError(f"ssl section: labels {count} > the {len(texts)} private examples of {data.name}; "
                          "lower labels or raise data.max_train")
    chosen = (list(texts[:count]), list(labels[:count])) if count is not None else (list(texts), list(labels))
    return DomainData(data.name, data.label_names, chosen, data.validation, data.test, tuple(texts),
                      data.fingerprints)


def section_domains(config: SSLBenchConfig) -> list[str]:
    """The domains the section runs, in the recipe's order."""
    return domain_names(config.data)


def run_domain(config: SSLBenchConfig, seed: int, name: str, load_base: LoadBase, work: Path) -> dict[str, Any]:
    """One domain's rows for one seed: per label count, the test and validation accuracy of the fine-tuned
    model without pretraining and after each objective's."""
    started = time.perf_counter()
    data = load_domain_data(config.data.model_copy(update={"seed": seed}), name)
    start = keep_head(load_base(config.model, config.max_length), name, data.label_names)
    starts: dict[str, EncoderHandle] = {"none": start}
    pretraining: dict[str, dict[str, float]] = {}
    for objective in config.objectives:
        pretrained = copy.deepcopy(start)
        stage = SSLStageConfig(**{**config.ssl.model_dump(), "objective": objective}, pool=["train"])
        out = STAGES["ssl"].run(pretrained, StageContext(data, None, work / objective, seed), stage)
        starts[objective], pretraining[objective] = out.handle, out.metrics
    rows = []
    for count in config.labels:
        labelled = _labelled(data, count)
        scores = {key: _finetune(model, labelled, config, seed, work / f"ft-{key}-{count}")
                  for key, model in starts.items()}
        rows.append({"domain": name, "labels": count if count is not None else "full",
                     "labelled": len(labelled.train[0]), "pool": len(data.train[0]), "scores": scores,
                     "pretraining": pretraining})
    return {"seed": seed, "domain": name, "rows": rows, "seconds": time.perf_counter() - started}


def join_seed(seed: int, parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One seed's record from its domains' parts."""
    return {"seed": seed, "rows": [row for part in parts for row in part["rows"]],
            "seconds": {part["domain"]: part["seconds"] for part in parts}}
