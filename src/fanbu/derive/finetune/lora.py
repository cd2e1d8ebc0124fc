"""LoRA through PEFT for fine-tuning: the target modules, the config, wrapping, and merging for deployment.

Saving and loading an unmerged adapter is :mod:`fanbu.models.lora` (a model kind of its own).
"""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from fanbu.derive.finetune.config import LoraSettings
from fanbu.errors import ModelError
from fanbu.models.encoder import EncoderHandle
from fanbu.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapted, load_adapter, save_adapter

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "DEFAULT_TARGETS",
    "add_lora",
    "default_targets",
    "is_adapted",
    "load_adapter",
    "lora_config",
    "merge_lora",
    "save_adapter",
]

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


def merge_lora(handle: EncoderHandle) -> EncoderHandle:
    """Merge the encoder's LoRA update into its weights, leaving a plain Hugging Face encoder (in place)."""
    if not is_adapted(handle):
        raise ModelError("the encoder carries no LoRA adapter to merge (already merged, or fully fine-tuned)")
    handle.model.encoder = handle.model.encoder.merge_and_unload()
    return handle
