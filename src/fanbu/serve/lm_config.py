"""Settings of served language models: generation limits and LM cascades (part of ``ServeConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fanbu.config import Strict

LMRuntime = Literal["auto", "torch", "ctranslate2"]


class GenerationLimits(Strict):
    """How served language models generate: what one request may ask for, how many run at once, and on what."""

    max_tokens: int = Field(
        512, ge=1, description="Most new tokens one request may ask for (`max_tokens` above it: 422)."
    )
    default_max_tokens: int = Field(
        64, ge=1, description="New tokens generated when a request gives no `max_tokens` (at most the cap)."
    )
    max_stop: int = Field(4, ge=0, description="Most stop strings in one request (as OpenAI's API).")
    workers: int = Field(
        2,
        ge=1,
        description="Generations of one model run at once, each in its own thread; more wait their turn "
        "(up to limits.max_queue, then 429).",
    )
    runtime: LMRuntime = Field(
        "auto",
        description="What generates: `ctranslate2` runs the int8 CTranslate2 export that `fanbu derive` "
        "writes under the model directory's ctranslate2/ (its export stage, `ctranslate2: true`); `torch` "
        "the saved fp32 weights; `auto` the export where a model has one and ctranslate2 is installed, "
        "else torch.",
    )


class LMCascadeConfig(Strict):
    """Small-to-large for language models: the small LM answers; if unsure, the large one does."""

    small: str = Field(description="The small causal LM: name or name:vN.")
    large: str = Field(description="The large causal LM: name or name:vN.")
    threshold: float = Field(
        -2.0,
        le=0.0,
        description="Escalate when the small LM's mean token log-probability over its completion is "
        "below this (0 escalates everything but certainties).",
    )
    target_escalation_rate: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="If set, tune the threshold at start-up from the logged mean log-probabilities of "
        "the small LM so that about this share of requests escalates.",
    )
    min_samples: int = Field(100, ge=1, description="Logged prompts needed to tune; fewer keeps `threshold`.")
