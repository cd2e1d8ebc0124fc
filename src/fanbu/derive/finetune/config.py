"""Settings of fine-tuning: full, or LoRA through PEFT."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.train.config import TrainConfig


class LoraSettings(Strict):
    """LoRA adapter settings (passed to ``peft.LoraConfig``)."""

    r: int = Field(8, ge=1, description="Rank of the low-rank update.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch's input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; default per architecture: BERT query/key/value/dense, "
        "Llama q_proj/k_proj/v_proj/o_proj.",
    )
    merge: bool = Field(
        True, description="Merge the update into the weights for deployment; false keeps a PEFT adapter."
    )

    @model_validator(mode="after")
    def _check(self) -> LoraSettings:
        if self.target_modules is not None and (
            not self.target_modules or any(not name.strip() for name in self.target_modules)
        ):
            raise ValueError(
                "target_modules must list module names (e.g. [query, value]) or be null for the default"
            )
        return self


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
