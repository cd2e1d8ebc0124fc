"""Settings of fine-tuning: full, or LoRA through PEFT."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from fanbu.config import Strict
from fanbu.train.config import TrainConfig


def _module_name(name: str) -> str:
    if not name.strip():
        raise ValueError("target_modules must list module names (e.g. [query, value]); this one is blank")
    return name


ModuleName = Annotated[str, AfterValidator(_module_name)]


class LoraSettings(Strict):
    """LoRA adapter settings (passed to ``peft.LoraConfig``)."""

    r: int = Field(8, ge=1, description="Rank of the low-rank update.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch's input.")
    target_modules: list[ModuleName] | None = Field(
        None,
        description="Module names to adapt; default per architecture: BERT query/key/value/dense, "
        "Llama q_proj/k_proj/v_proj/o_proj.",
    )
    merge: bool = Field(
        True, description="Merge the update into the weights for deployment; false keeps a PEFT adapter."
    )

    @field_validator("target_modules")
    @classmethod
    def _names(cls, names: list[str] | None) -> list[str] | None:
        # field and item checks, so that the error names lora.target_modules or its blank item (the recipe
        # fuzzer found the section-level location too coarse)
        if names is not None and not names:
            raise ValueError(
                "target_modules must list module names (e.g. [query, value]) or be null for the default"
            )
        return names


class FinetuneConfig(Strict):
    """Fine-tuning on a domain: every weight (``full``) or LoRA adapters plus the heads (``lora``)."""

    mode: Literal["full", "lora"] = Field("full", description="full: all weights train; lora: PEFT LoRA.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (mode: lora).")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=3, batch_size=16, lr=5e-5),
        description="Settings of the training loop (LoRA usually wants a larger lr, e.g. 5e-4).",
    )

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.mode == "full" and self.lora != LoraSettings():
            raise ValueError(
                "lora settings are given but mode is 'full', so they would be ignored; set mode: lora, "
                "or remove the lora section"
            )
        return self
