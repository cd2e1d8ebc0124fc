"""Settings of ``fanbu adapt``: which deployed small model learns from which collected dataset, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fanbu.collect.curated import TIERS
from fanbu.config import Strict
from fanbu.derive.data import DeriveData
from fanbu.derive.quantize import QuantizeConfig
from fanbu.train.config import TrainConfig

Tier = Literal["human", "pseudo", "hard"]


class AdaptConfig(Strict):
    """What ``fanbu adapt`` runs: fine-tune a deployed small model on its domain's collected traffic,
    mixed with replay of its own private training slice, into the next version of the same name."""

    model: str = Field(
        description="The deployed small model: a registry id (comp.quantize:v0) or a name (its newest version)."
    )
    collected: str = Field(
        description="The dataset `fanbu collect` registered: an id (collected@3f2a...) or a name (its newest)."
    )
    domain: str | None = Field(
        None, description="The head (domain) to adapt; default: the model's own head, when it has only one."
    )
    tiers: list[Tier] = Field(
        default_factory=lambda: list(TIERS),
        description="Which collected tiers to learn from. Trust order is always human, pseudo, hard: "
        "under max_examples the more trusted tier is taken first; leave a tier out to switch it off.",
    )
    max_examples: int | None = Field(
        None, ge=1, description="Cap on collected examples (most trusted tiers first); null: all of them."
    )
    replay: float = Field(
        1.0,
        ge=0.0,
        description="Replay examples from the model's own private training slice per collected example, "
        "mixed into the same batches so that it does not forget (1.0: as many as collected; 0: none; "
        "capped by the slice's size).",
    )
    replay_data: DeriveData | None = Field(
        None,
        description="The data section the model's derive recipe used, when the registry record alone no "
        "longer reproduces it (moved files); its private and validation fingerprints must match the "
        "recorded ones. Default: the spec recorded with the model.",
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=2, batch_size=16, lr=1e-4, progress=False),
        description="Settings of the training loop (short: a deployed model takes small steps); its seed "
        "is the top-level seed.",
    )
    quantize: QuantizeConfig = Field(
        default_factory=QuantizeConfig,
        description="How the adapted model is re-exported: torch int8, ONNX and the int8 ONNX deployment.",
    )
    seed: int = Field(0, description="Seeds the replay sample and the training loop.")

    @model_validator(mode="after")
    def _check(self) -> AdaptConfig:
        if not self.tiers:
            raise ValueError(f"tiers: enable at least one of {', '.join(TIERS)}")
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"tiers: each tier once, got {self.tiers}")
        if "seed" in self.train.model_fields_set and self.train.seed != self.seed:
            raise ValueError(
                "train.seed: set the top-level seed instead (it seeds replay and training alike)"
            )
        if self.train.seed != self.seed:
            self.train.seed = self.seed  # the one seed, written where the loop reads it
        return self
