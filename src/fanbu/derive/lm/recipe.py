"""The ``task: causal_lm`` derive recipe: teacher, data, stages (see :mod:`.stages`), executor."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.derive.lm.data import LMDeriveData
from fanbu.derive.lm.stages import parse_lm_stages
from fanbu.derive.presets import LM_DERIVE_STAGES, copy_stages
from fanbu.errors import ConfigError
from fanbu.execute import ExecutorConfig

LM_TEACHER = "package:SmolLM2-135M-Instruct"


class LMDeriveRecipe(Strict):
    """What ``fanbu derive`` runs for ``task: causal_lm``."""

    task: Literal["causal_lm"] = Field("causal_lm", description="This recipe derives causal LMs.")
    teacher: str = Field(
        LM_TEACHER,
        description="A registered causal LM (id or name) or a source (package:NAME, a dir, a hub id).",
    )
    max_length: int = Field(256, ge=16, description="Context length for training windows and scoring.")
    data: LMDeriveData = Field(default_factory=LMDeriveData)
    stages: list[Any] = Field(
        default_factory=lambda: copy_stages(LM_DERIVE_STAGES), description="[{stage: {settings}}, ...]"
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @model_validator(mode="after")
    def _stages_valid(self) -> LMDeriveRecipe:
        try:
            parse_lm_stages(self.stages)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self
