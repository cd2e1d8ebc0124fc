"""``fanbu adapt --shots K DOMAIN``: any registered encoder (v0, a meta-initialised or a small model) taken
to a new domain from K labelled examples per class.

The K examples per class are drawn from the domain's training split with the seed; a fresh head for
the domain's labels is trained with the encoder through the one loop, its best epoch chosen on the
domain's validation split; the test split is scored once, for the report. The result is registered with
the source model as parent (relation ``finetune``), the fingerprint of the K-shot sample as its training
data, and ``shots`` in its metadata.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from fanbu.config import Strict
from fanbu.data.builtin import BUILTIN_SOURCES, load_builtin
from fanbu.data.domain import Domain, Split
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.derive.pipeline import keep_head
from fanbu.errors import ConfigError, DomainError
from fanbu.evaluate.metrics import classification_metrics
from fanbu.evaluate.speed import param_count
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig

RELATION = "finetune"
_SEARCHED = ("20newsgroups", "bbc-news", "reuters-r8", "reuters-r52")  # built-in sources a domain name is looked up in


class FewShotConfig(Strict):
    """What ``fanbu adapt --shots`` runs."""

    model: str = Field(description="The model to adapt: a registry id or name (its champion), package:NAME, "
                                   "a directory or a hub id.")
    domain: str = Field(description="The new domain: a built-in domain (comp, rec, sci, politics, religion, "
                                    "bbc-news, reuters-r8, reuters-r52), or the name of `data`.")
    data: DomainSource | None = Field(None, description="Your own domain's files (its name must be `domain`).")
    shots: int = Field(ge=1, description="Labelled training examples per class.")
    max_length: int = Field(128, ge=8, description="Tokens of each text the encoder reads.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=20, batch_size=16, lr=1e-4, progress=False),
        description="The training loop (its best epoch is kept on the domain's validation split); its seed is "
                    "the top-level seed.")
    name: str | None = Field(None, description="Registered name; default DOMAIN.fewshot.")
    seed: int = Field(0, description="Seeds the draw of the K examples and the training loop.")


def fewshot_domain(config: FewShotConfig) -> Domain:
    """The domain to adapt to: the user's files, or the built-in domain of that name.

    Raises:
        ConfigError: ``data`` names another domain, or no built-in source has the domain.
    """
    if config.data is not None:
        if config.data.name != config.domain:
            raise ConfigError(f"data.name {config.data.name!r} differs from domain {config.domain!r}; "
                              "name them the same")
        return load_domain(config.data)
    for source in _SEARCHED:
        found = [d for d in load_builtin(source) if d.name == config.domain]
        if found:
            return found[0]
    known = ", ".join(BUILTIN_SOURCES)
    raise ConfigError(f"domain {config.domain!r}: not a built-in domain (sources: {known}; 20 Newsgroups gives "
                      "comp, rec, sci, politics, religion); give your own files as data")


def draw_shots(split: Split, label_names: tuple[str, ...], shots: int, seed: int) -> Split:
    """``shots`` examples of every label of ``split``, drawn with ``seed`` (in label order).

    Raises:
        ConfigError: a label has fewer than ``shots`` training examples.
    """
    labels = np.asarray(split.labels)
    rng = np.random.default_rng(seed)
    short = {label_names[c]: int((labels == c).sum()) for c in range(len(label_names)) if (labels == c).sum() < shots}
    if short:
        raise ConfigError(f"shots {shots}: more than these labels have training examples: {short}; lower shots "
                          f"to {min(short.values())} or add examples")
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:shots] for c in range(len(label_names))])
    return split.select(int(i) for i in chosen)


def _score(handle: EncoderHandle, head: str, split: Split) -> dict[str, float]:
    return classification_metrics(handle.predict(list(split.texts), head, batch_size=64), list(split.labels or ()),
                                  len(handle.labels[head]))


def run_fewshot(config: FewShotConfig, registry: Registry) -> dict[str, Any]:
    """Adapt, register and score; recorded as an ``adapt`` run. Returns the summary."""
    workspace = Workspace(registry)
    with workspace.run("adapt", config) as run:
        run.summary = _adapt(workspace, config, run.id)
    return run.summary


def _adapt(workspace: Workspace, config: FewShotConfig, run_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        domain = fewshot_domain(config)
    except DomainError as exc:
        raise ConfigError(f"domain: {exc}") from None
    if domain.task != "classification":
        raise ConfigError(f"domain {domain.name!r} is a {domain.task} task; --shots adapts classifiers")
    sample = draw_shots(domain.train, domain.label_names, config.shots, config.seed)
    handle, parent = workspace.load_spec(config.model, config.max_length)
    handle = keep_head(handle, domain.name, domain.label_names)
    train = config.train.model_copy(update={"seed": config.seed})
    validation = (list(domain.validation.texts), list(domain.validation.labels or ()))
    result = train_heads(handle, {domain.name: (list(sample.texts), list(sample.labels or ()))}, train,
                         {domain.name: validation}, description=f"adapt {config.shots}-shot")
    scores = {"validation": _score(handle, domain.name, domain.validation),
              "test": _score(handle, domain.name, domain.test)}
    fingerprints = {"shots": sample.fingerprint, "validation": domain.validation.fingerprint,
                    "test": domain.test.fingerprint}
    provenance = Provenance(recipe={"adapt_fewshot": config.model_dump(mode="json")}, parents=[parent],
                            data_fingerprints=fingerprints, base_model=parent,
                            metrics={"val_acc": scores["validation"]["accuracy"]})
    made = workspace.save_and_register(
        handle, provenance, name=config.name or f"{domain.name}.fewshot", relation=RELATION,
        metadata={"adapted_from": parent, "domain": domain.name, "shots": config.shots,
                  "examples": len(sample), "params": param_count(handle.model),
                  "seconds": time.perf_counter() - started})
    for split, metrics in scores.items():
        workspace.registry.record_evaluation(made.id, domain=domain.name, split=split, metrics=metrics,
                                             dataset_fingerprint=fingerprints[split], run_id=run_id)
    return {"model": made.id, "parent": parent, "domain": domain.name, "shots": config.shots,
            "examples": len(sample), "validation_accuracy": scores["validation"]["accuracy"],
            "test_accuracy": scores["test"]["accuracy"], "best_step": result.state.best_step,
            "seconds": time.perf_counter() - started}
