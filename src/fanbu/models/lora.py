"""An unmerged LoRA adapter as a model kind of its own (``lora``): saved alone, loaded onto its base.

The directory holds PEFT's ``adapter_model.safetensors`` and ``adapter_config.json`` beside fanbu's
``heads.safetensors``, ``handle.json``, tokenizer and provenance (``base_model_relation: adapter``,
``base_model``: the registry id of the model it adapts). :func:`load_adapter` puts it back on a base
encoder; the workspace (:meth:`fanbu.registry.workspace.Workspace.load`) finds and loads that base.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from fanbu.errors import ModelError
from fanbu.models.artefact import Provenance, expect_kind, model_directory, write_provenance
from fanbu.models.encoder import (
    EncoderHandle,
    classifier_with_heads,
    read_handle_settings,
)
from fanbu.models.sources import LOAD_LOCK

KIND = "lora"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapted(handle: EncoderHandle) -> bool:
    """Whether the handle's encoder carries an unmerged PEFT adapter."""
    return isinstance(handle.model.encoder, PeftModel)


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
        handle.write_classifier_files(tmp, adapter=ADAPTER_CONFIG)
        write_provenance(tmp, provenance, KIND)
    handle.provenance = provenance
    return Path(path)


def load_adapter(base: EncoderHandle, path: str | Path) -> EncoderHandle:
    """Put a saved adapter (with its heads and tokenizer) on a copy of ``base``'s encoder.

    ``base`` itself is not modified; its heads are not used.
    """
    directory = Path(path)
    provenance = expect_kind(directory, KIND, legacy=("encoder",))  # before adapters had their own kind
    if not (directory / ADAPTER_CONFIG).is_file():
        raise ModelError(
            f"{directory}: no {ADAPTER_CONFIG}, so this is not a saved adapter; load it with fanbu.models.load_handle"
        )
    if isinstance(base.model.encoder, PeftModel):
        raise ModelError("the base encoder already carries an adapter; pass the plain base model")
    settings = read_handle_settings(directory)
    try:
        with LOAD_LOCK:  # PEFT loads through transformers: see LOAD_LOCK
            encoder = PeftModel.from_pretrained(copy.deepcopy(base.model.encoder), str(directory))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(
            f"{directory}: the adapter does not fit the base encoder ({exc}); pass the base model it was trained on"
        ) from None
    model = classifier_with_heads(encoder, directory, settings)
    labels: dict[str, list[str]] = settings["labels"]
    model.to(next(base.model.parameters()).device)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return EncoderHandle(model, tokenizer, labels, settings["max_length"], provenance,
                         settings.get("truncation", "head"))
