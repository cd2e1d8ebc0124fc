"""LoRA through PEFT: wrap, merge for deployment, or save and load as an adapter.

An unmerged encoder adapter is a directory with PEFT's ``adapter_model.safetensors`` and
``adapter_config.json`` beside fanbu's ``heads.safetensors``, ``handle.json``, tokenizer and
provenance (``base_model_relation: adapter``); :func:`load_adapter` puts it back on a base encoder.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer

from fanbu.derive.finetune.config import LoraSettings
from fanbu.errors import ModelError
from fanbu.io import atomic_write_json
from fanbu.models.artefact import Provenance, expect_kind, model_directory, write_provenance
from fanbu.models.encoder import HANDLE_FILE, HEADS_FILE, EncoderClassifier, EncoderHandle, _read_settings

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def default_targets(model: nn.Module) -> list[str]:
    """The LoRA target modules for ``model``'s architecture (``config.model_type``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = DEFAULT_TARGETS.get(model_type) or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(
        model_type
    )
    if not targets:
        raise ModelError(
            f"no default LoRA target modules for model type {model_type!r}; set lora.target_modules to the "
            "names of its attention/MLP linear layers"
        )
    return list(targets)


def lora_config(model: nn.Module, settings: LoraSettings, task_type: str | None = None) -> LoraConfig:
    """A ``peft.LoraConfig`` for ``model`` (the unused BERT pooler is left alone)."""
    targets = settings.target_modules or default_targets(model)
    names = {name for name, _ in model.named_modules()}
    exclude = ["pooler.dense"] if any(n.endswith("pooler.dense") for n in names) else None
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        exclude_modules=exclude,
        bias="none",
        task_type=task_type,
    )


def add_lora(model: nn.Module, settings: LoraSettings, task_type: str | None = None) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters; only the adapters stay trainable inside it."""
    if isinstance(model, PeftModel):
        raise ModelError(
            "the model already carries a PEFT adapter; merge it (merge_lora) before adding another"
        )
    try:
        return get_peft_model(model, lora_config(model, settings, task_type))
    except ValueError as exc:
        raise ModelError(
            f"cannot add LoRA to {type(model).__name__}: {exc}; check lora.target_modules against its module names"
        ) from None


def is_adapted(handle: EncoderHandle) -> bool:
    """Whether the handle's encoder carries an unmerged PEFT adapter."""
    return isinstance(handle.model.encoder, PeftModel)


def merge_lora(handle: EncoderHandle) -> EncoderHandle:
    """Merge the encoder's LoRA update into its weights, leaving a plain Hugging Face encoder (in place)."""
    if not is_adapted(handle):
        raise ModelError("the encoder carries no LoRA adapter to merge (already merged, or fully fine-tuned)")
    handle.model.encoder = handle.model.encoder.merge_and_unload()
    return handle


def save_adapter(handle: EncoderHandle, path: str | Path, provenance: Provenance) -> Path:
    """Save an unmerged LoRA encoder as a PEFT adapter plus heads, tokenizer and provenance (atomically).

    The provenance is recorded with ``base_model_relation: adapter``.
    """
    if not is_adapted(handle):
        raise ModelError(
            "the encoder carries no LoRA adapter (merged or fully fine-tuned); save it with handle.save, or "
            "fine-tune with mode: lora and lora.merge: false to keep an adapter"
        )
    provenance = dataclasses.replace(provenance, base_model_relation="adapter")
    with model_directory(path) as tmp:
        handle.model.encoder.save_pretrained(tmp, safe_serialization=True)
        if len(handle.model.heads):
            state = {k: v.detach().contiguous().cpu() for k, v in handle.model.heads.state_dict().items()}
            save_file(state, str(tmp / HEADS_FILE))
        handle.tokenizer.save_pretrained(tmp)
        settings = {
            "max_length": handle.max_length,
            "truncation": handle.truncation,
            "dropout": handle.model.dropout.p,
            "labels": handle.labels,
            "adapter": ADAPTER_CONFIG,
        }
        atomic_write_json(tmp / HANDLE_FILE, settings)
        write_provenance(tmp, provenance, EncoderHandle.kind)
    handle.provenance = provenance
    return Path(path)


def load_adapter(base: EncoderHandle, path: str | Path) -> EncoderHandle:
    """Put a saved adapter (with its heads and tokenizer) on a copy of ``base``'s encoder.

    ``base`` itself is not modified; its heads are not used.
    """
    directory = Path(path)
    provenance = expect_kind(directory, EncoderHandle.kind)
    if not (directory / ADAPTER_CONFIG).is_file():
        raise ModelError(
            f"{directory}: no {ADAPTER_CONFIG}, so this is not a saved adapter; load it with EncoderHandle.load"
        )
    if isinstance(base.model.encoder, PeftModel):
        raise ModelError("the base encoder already carries an adapter; pass the plain base model")
    settings = _read_settings(directory)
    try:
        encoder = PeftModel.from_pretrained(copy.deepcopy(base.model.encoder), str(directory))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(
            f"{directory}: the adapter does not fit the base encoder ({exc}); pass the base model it was trained on"
        ) from None
    labels: dict[str, list[str]] = settings["labels"]
    model = EncoderClassifier(encoder, {n: len(v) for n, v in labels.items()}, settings["dropout"])
    if labels:
        try:
            model.heads.load_state_dict(load_file(str(directory / HEADS_FILE)), strict=True)
        except (RuntimeError, OSError) as exc:
            raise ModelError(
                f"{directory / HEADS_FILE}: does not match {HANDLE_FILE} ({exc}); re-save"
            ) from None
    model.to(next(base.model.parameters()).device)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return EncoderHandle(model, tokenizer, labels, settings["max_length"], provenance,
                         settings.get("truncation", "head"))
