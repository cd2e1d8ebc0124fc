"""``fanbu adapt --shots K DOMAIN``: a model (v0, a small model, a meta-initialisation) taken to a new domain
from K labelled examples per class.

The K examples per class are drawn from the domain's training split with the seed. An encoder gets a
fresh head for the domain's labels, trained with the encoder through the one loop, its best epoch
chosen on the domain's validation split. A meta-initialisation (``fanbu.meta``: a body on the frozen
encoder's pooled features) adapts with a zero head and ``meta_adapt.steps`` SGD steps, its learning
rate chosen from ``meta_adapt.lr_grid`` on the domain's validation split; the result is the adapted
network, a module model on the same encoder's features. The test split is scored once, for the report.
The result is registered with the source model as parent (relation ``finetune``), the fingerprint of
the K-shot sample as its training data, and ``shots`` in its metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from fanbu.config import Strict
from fanbu.data.builtin import BUILTIN_SOURCES, load_builtin
from fanbu.data.domain import Domain, Split
from fanbu.data.loaders import DomainSource, load_domain
from fanbu.errors import ConfigError, DomainError, RegistryError
from fanbu.evaluate.metrics import classification_metrics
from fanbu.evaluate.speed import param_count
from fanbu.meta.adapt import AdaptConfig as MetaAdaptConfig
from fanbu.meta.adapt import adapt as adapt_body
from fanbu.meta.artefacts import BODY_FACTORY, META_KEY, load_meta_init
from fanbu.meta.features import split_features
from fanbu.meta.network import AdaptedNet
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle, keep_head
from fanbu.models.module import ModuleHandle
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
    meta_adapt: MetaAdaptConfig = Field(default_factory=MetaAdaptConfig,
                                        description="How a meta-initialisation adapts (steps, learning-rate grid).")
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
    meta_init = _meta_init(workspace, config.model)
    if meta_init is not None:
        return _adapt_meta_init(workspace, config, domain, sample, meta_init, run_id, started)
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
    return _finish(workspace, made.id, parent, domain.name, config.shots, len(sample), scores, fingerprints,
                   run_id, started) | {"best_step": result.state.best_step}


def _finish(workspace: Workspace, made: str, parent: str, domain: str, shots: int, examples: int,
            scores: dict[str, dict[str, float]], fingerprints: dict[str, str], run_id: str,
            started: float) -> dict[str, Any]:
    """Record the validation and test evaluations of ``made``; the run's summary."""
    for split, metrics in scores.items():
        workspace.registry.record_evaluation(made, domain=domain, split=split, metrics=metrics,
                                             dataset_fingerprint=fingerprints[split], run_id=run_id)
    return {"model": made, "parent": parent, "domain": domain, "shots": shots, "examples": examples,
            "validation_accuracy": scores["validation"]["accuracy"], "test_accuracy": scores["test"]["accuracy"],
            "seconds": time.perf_counter() - started}


def _meta_init(workspace: Workspace, spec: str) -> tuple[Path, str | None] | None:
    """(directory, registry id or None) when ``spec`` names a meta-initialisation, else None."""
    record_id = None
    path = Path(spec)
    if not path.is_dir():
        try:
            record = workspace.resolve(spec)
        except RegistryError:
            return None
        if record.kind != "module":
            return None
        path, record_id = Path(record.path), record.id
    module = path / "module.json"
    try:
        factory = json.loads(module.read_text(encoding="utf-8")).get("factory") if module.is_file() else None
    except (OSError, ValueError):
        return None
    return (path, record_id) if factory == BODY_FACTORY else None


def _adapt_meta_init(workspace: Workspace, config: FewShotConfig, domain: Domain, sample: Split,
                     meta_init: tuple[Path, str | None], run_id: str, started: float) -> dict[str, Any]:
    path, parent = meta_init
    body, provenance = load_meta_init(path)
    facts = (provenance.extra or {}).get(META_KEY) or {}
    encoder_name = facts.get("encoder")
    if not encoder_name:
        raise ConfigError(f"model: the meta-initialisation in {path} does not record its encoder "
                          f"(provenance extra.{META_KEY}.encoder); re-save it with meta_provenance")
    features = facts.get("features") or {}
    encoder = EncoderHandle.from_source(encoder_name, max_length=int(features.get("max_length", config.max_length)))
    if "truncation" in features:
        encoder.truncation = features["truncation"]
    x = {name: split_features(encoder, encoder_name, split, None)
         for name, split in (("shots", sample), ("validation", domain.validation), ("test", domain.test))}
    y = {name: torch.tensor(split.labels or (), dtype=torch.long)
         for name, split in (("shots", sample), ("validation", domain.validation), ("test", domain.test))}
    n_way, steps = len(domain.label_names), config.meta_adapt.steps
    tried = {}
    for lr in config.meta_adapt.lr_grid:  # chosen on the new domain's validation split, never on test
        adapted = adapt_body(body, x["shots"], y["shots"], n_way, lr, steps, config.meta_adapt.inner)
        tried[lr] = (float((torch.as_tensor(adapted.predict(x["validation"])) == y["validation"]).float().mean()),
                     adapted)
    lr = max(tried, key=lambda rate: (tried[rate][0], -rate))
    net = AdaptedNet.from_params(body, tried[lr][1].params)
    scores = {split: classification_metrics(net.predict_proba(x[split]).argmax(axis=-1), y[split].tolist(), n_way)
              for split in ("validation", "test")}
    if parent is None:
        parent = workspace.registry.register_model(
            name=path.resolve().name, path=str(path), kind="module", status="archived",
            metadata={"source": str(path), "role": "meta-initialisation"}).id
    fingerprints = {"shots": sample.fingerprint, "validation": domain.validation.fingerprint,
                    "test": domain.test.fingerprint}
    handle = ModuleHandle(net, {"in_dim": body.in_dim, "hidden": body.hidden, "n_way": n_way},
                          "fanbu.meta.network:AdaptedNet")
    made = workspace.save_and_register(
        handle,
        Provenance(recipe={"adapt_fewshot": config.model_dump(mode="json"), "lr": lr}, parents=[parent],
                   data_fingerprints=fingerprints, base_model=encoder_name, base_model_relation="adapter",
                   metrics={"val_acc": scores["validation"]["accuracy"]},
                   extra={META_KEY: {**facts, "label_names": list(domain.label_names), "adapted_from": parent}}),
        name=config.name or f"{domain.name}.fewshot", relation=RELATION,
        metadata={"adapted_from": parent, "domain": domain.name, "shots": config.shots, "examples": len(sample),
                  "lr": lr, "lr_validation": {str(k): v[0] for k, v in tried.items()},
                  "seconds": time.perf_counter() - started})
    return _finish(workspace, made.id, parent, domain.name, config.shots, len(sample), scores, fingerprints,
                   run_id, started) | {"best_step": None}
