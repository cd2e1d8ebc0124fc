"""Settings of the one training loop."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from fanbu.config import Strict


class TrainConfig(Strict):
    """How the loop trains: optimisation, evaluation, early stopping and checkpoints."""

    epochs: int = Field(3, ge=1, description="Passes over the training batches.")
    batch_size: int = Field(16, ge=1, description="Examples per optimiser step (before accumulation).")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    lr_multipliers: dict[str, float] | None = Field(
        None,
        description="Parameter-name prefix -> factor on lr (and on its schedule) for the parameters whose "
        "names start with it, the longest matching prefix winning; unmatched parameters keep lr. E.g. "
        "{'encoder.embeddings.': 0.1, 'encoder.encoder.layer.0.': 0.5}. Factors are > 0 (to hold parameters "
        "fixed, freeze them: frozen_layers in the feedback strategies); null: one lr for all.",
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps with linear warm-up.")
    schedule: Literal["linear", "constant"] = Field("linear", description="LR decay after warm-up.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; null: off.")
    grad_accum: int = Field(1, ge=1, description="Batches accumulated per optimiser step.")
    seed: int = Field(0, description="Seeds batch order, dropout and initialisation.")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch's intra-op threads, set when training starts (they change float sums' order, so "
        "the last bits of the numbers); null keeps the process's count. Recorded with every run.",
    )
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Probability of every dropout layer while training; null keeps the model's own. 0 turns "
        "dropout off: on CPU, where drawing the masks is slow, a small encoder's step is about a fifth faster.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch texts of similar length together (less padding, faster; order stays random).",
    )
    eval_every: int | None = Field(
        None, ge=1, description="Evaluate every N optimiser steps; null: at the end of each epoch."
    )
    metric: str = Field("score", description="Key of the evaluation dict used for early stopping.")
    mode: Literal["max", "min"] = Field("max", description="Whether a larger metric is better.")
    patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement; null: never."
    )
    restore_best: bool = Field(True, description="End with the weights of the best evaluation.")
    checkpoint_every: int | None = Field(
        None, ge=1, description="Checkpoint every N optimiser steps; null: at the end of each epoch."
    )
    keep_checkpoints: int = Field(1, ge=1, description="How many recent checkpoints to keep.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps in total.")
    progress: bool = Field(True, description="Show a progress bar.")

    @field_validator("lr_multipliers")
    @classmethod
    def _check_multipliers(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for prefix, factor in (value or {}).items():
            if not math.isfinite(factor) or factor <= 0:
                hint = " (to hold parameters fixed, freeze them: frozen_layers)" if factor == 0 else ""
                raise ValueError(
                    f"lr_multipliers[{prefix!r}] = {factor}: a factor must be a finite number > 0{hint}"
                )
        return value
