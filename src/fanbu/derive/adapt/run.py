"""``fanbu adapt``: the next version of a deployed small model, fine-tuned on its domain's traffic.

The fp32 twin inside the model's quantize deployment is fine-tuned through the one loop on the domain's
collected examples (human corrections first, then confident pseudo-labels, then hard examples the large
model labelled) mixed in the same batches with replay of the model's own private slice; the best epoch
is chosen on the domain's validation part. The result is saved as a deployment again (fp32 weights and
the int8 ONNX graph, with derive's quantize code) and registered as the next version of the same name,
relation ``finetune``, with the old version as parent and the collected dataset as training data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fanbu.collect.curated import TIERS
from fanbu.derive.adapt.config import AdaptConfig
from fanbu.derive.adapt.data import model_slices, read_examples, replay_sample, take_tiers
from fanbu.derive.quantize import save_deployment
from fanbu.errors import ConfigError, RegistryError
from fanbu.evaluate.metrics import classification_metrics
from fanbu.evaluate.speed import param_count
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace
from fanbu.train.classify import train_heads

RELATION = "finetune"  # an adapted version is a fine-tune of the previous one (registry and card alike)


def run_adapt(config: AdaptConfig, registry: Registry) -> dict[str, Any]:
    """Adapt ``config.model`` on ``config.collected`` as a recorded ``adapt`` run; returns its summary.

    Raises:
        ConfigError: an unknown model or dataset, a model without the domain's classifier head, label
            names that differ, nothing to adapt on, or replay data that does not match the record.
            Nothing is registered or left on disk then; the run is recorded as failed.
    """
    workspace = Workspace(registry)
    with workspace.run("adapt", config) as run:
        run.summary = adapt_model(workspace, config, run.id)
    return run.summary


def adapt_model(workspace: Workspace, config: AdaptConfig, run_id: str | None = None) -> dict[str, Any]:
    """Fine-tune, save and register the next version of ``config.model``; returns the summary."""
    started = time.perf_counter()
    record = _resolve(workspace, config.model)
    handle = _classifier(workspace, record)
    domain = _domain(config, record, handle)
    slices = model_slices(record, domain, config.replay_data)
    collected = read_examples(workspace.registry, config.collected, domain, handle.labels[domain])
    (texts, labels), used = take_tiers(collected.tiers, config.tiers, config.max_examples)
    if not texts:
        available = {t: len(p[0]) for t, p in collected.tiers.items()}
        raise ConfigError(
            f"nothing to adapt on: dataset {collected.record.id} has no labelled {domain!r} examples in the "
            f"enabled tiers {config.tiers} (it has {available}); collect more traffic, or enable tiers "
            f"({', '.join(TIERS)})"
        )
    replay = replay_sample(slices.private, round(config.replay * len(texts)), config.seed)
    before = _score(handle, domain, slices.validation)
    # one task, so collected and replay rows are shuffled into the same batches; the handle's
    # subnetwork record is an attribute training never touches, so it is saved unchanged
    train = {domain: (texts + replay[0], labels + replay[1])}
    result = train_heads(handle, train, config.train, {domain: slices.validation}, description="adapt")
    after = _score(handle, domain, slices.validation)
    checks: dict[str, float] = {}

    def save(path: Path, provenance: Provenance) -> None:
        report = save_deployment(
            handle, path, config.quantize, provenance, slices.validation[0][: config.quantize.check_texts]
        )
        if report.onnx_int8_agreement is not None:  # argmax agreement of the int8 graph with fp32
            checks["onnx_int8_agreement"] = report.onnx_int8_agreement

    provenance = Provenance(
        recipe={"adapt": config.model_dump(mode="json"), "replay_data": slices.spec.model_dump(mode="json")},
        parents=[record.id],
        data_fingerprints={**slices.fingerprints, "collected": collected.record.fingerprint},
        base_model=record.id,
        metrics={"val_acc_before": before["accuracy"], "val_acc": after["accuracy"]},
    )
    examples = {"collected": used, "replay": len(replay[0])}
    made = workspace.save_and_register(
        handle,
        provenance,
        name=record.name,
        relation=RELATION,
        save=save,
        datasets=[collected.record.id],
        metadata={
            "adapted_from": record.id,
            "domain": domain,
            "examples": examples,
            "params": param_count(handle.model),
            "seconds": time.perf_counter() - started,
        },
    )
    workspace.registry.record_evaluation(
        made.id,
        domain=domain,
        split="validation",
        metrics=after,
        dataset_fingerprint=slices.fingerprints["validation"],
        run_id=run_id,
    )
    return {
        "model": made.id,
        "parent": record.id,
        "collected": collected.record.id,
        "domain": domain,
        "examples": used,
        "replay": len(replay[0]),
        "validation_accuracy": {"before": before["accuracy"], "after": after["accuracy"]},
        "best_step": result.state.best_step,
        "deployment": checks,
        "seconds": time.perf_counter() - started,
    }


def _resolve(workspace: Workspace, ref: str) -> ModelRecord:
    try:
        return workspace.resolve(ref)
    except RegistryError as exc:
        raise ConfigError(f"model: {exc}") from None


def _classifier(workspace: Workspace, record: ModelRecord) -> EncoderHandle:
    try:
        return workspace.load_encoder(record)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None


def _domain(config: AdaptConfig, record: ModelRecord, handle: EncoderHandle) -> str:
    heads = list(handle.labels)
    if config.domain is None and len(heads) == 1:
        return heads[0]
    if config.domain is None:
        raise ConfigError(f"domain: model {record.id} has heads {heads}; set domain to the one to adapt")
    if config.domain not in heads:
        raise ConfigError(
            f"domain: model {record.id} has no classifier head {config.domain!r} (heads: "
            f"{', '.join(heads) or 'none'}); set domain to one of them, or adapt that domain's model"
        )
    return config.domain


def _score(handle: EncoderHandle, head: str, split: tuple[list[str], list[int]]) -> dict[str, float]:
    texts, labels = split
    return classification_metrics(
        handle.predict(texts, head, batch_size=64), labels, len(handle.labels[head])
    )
