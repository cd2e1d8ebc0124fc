"""Fine-tuning on a domain: full, or LoRA through PEFT (merged for deployment, or kept as an adapter)."""

from fanbu.derive.finetune.config import FinetuneConfig, LoraSettings
from fanbu.derive.finetune.lora import (
    DEFAULT_TARGETS,
    add_lora,
    default_targets,
    is_adapted,
    load_adapter,
    lora_config,
    merge_lora,
    save_adapter,
)
from fanbu.derive.finetune.run import finetune, finetune_causal_lm

__all__ = [
    "DEFAULT_TARGETS",
    "FinetuneConfig",
    "LoraSettings",
    "add_lora",
    "default_targets",
    "finetune",
    "finetune_causal_lm",
    "is_adapted",
    "load_adapter",
    "lora_config",
    "merge_lora",
    "save_adapter",
]
