"""Request and response bodies of the API (published in the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from fanbu.config import Strict


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"contains NUL (U+0000) at {value.index(chr(0))}; remove it")
    return value


Name = Annotated[str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})]
"""A name the server looks up (model, head, prediction id, label): NUL is refused with a 422 here, as
no SQL store can be asked for it (PostgreSQL refuses it in a text parameter). Texts are checked apart,
by :mod:`fanbu.serve.texts`."""


class PredictRequest(Strict):
    """Texts to classify with one model (or cascade) and head."""

    model: Name = Field(
        min_length=1,
        max_length=300,
        description="name, name:vN, or a cascade name.",
        examples=["comp.quantize"],
    )
    texts: list[str] = Field(min_length=1, description="The texts; at most limits.max_batch_texts.")
    head: Name | None = Field(
        None, max_length=255, description="The head (domain); optional if the model has one head."
    )


class PredictionOut(BaseModel):
    """One text's answer."""

    id: str = Field(description="Prediction id, for /v1/feedback.")
    label: str
    confidence: float = Field(description="Top class probability.")
    probabilities: dict[str, float] = Field(description="Label name -> probability.")
    model: str = Field(description="The model version that answered (name:vN).")
    escalated: bool = Field(description="Whether a cascade passed this text to its large model.")


class PredictResponse(BaseModel):
    """Answers in the order of the request's texts."""

    model: str
    head: str
    predictions: list[PredictionOut]


class FeedbackRequest(Strict):
    """A corrected label and/or a rating for a prediction; a rating and/or a corrected completion for a
    generation (its id as /v1/generate, /v1/completions or /v1/chat/completions returned it)."""

    prediction_id: Name = Field(min_length=1, max_length=64, description="A prediction or generation id.")
    label: Name | None = Field(None, max_length=255, description="The correct label name (predictions).")
    rating: int | None = Field(None, ge=1, le=5, description="1 (wrong) .. 5 (right).")
    completion: str | None = Field(
        None, min_length=1, description="The completion the model should have written (generations)."
    )

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.label is None and self.rating is None and self.completion is None:
            raise ValueError("give a corrected label or completion, a rating (1-5), or both")
        if self.label is not None and self.completion is not None:
            raise ValueError("a label corrects a prediction, a completion a generation: send one of them")
        return self


class FeedbackResponse(BaseModel):
    """The recorded feedback."""

    prediction_id: str
    label: str | None
    rating: int | None
    status: str = "recorded"


class GenerationFeedbackResponse(BaseModel):
    """The recorded feedback on a generation."""

    generation_id: str
    rating: int | None
    completion_stored: bool = Field(description="Whether a corrected completion was kept (not under 'hash').")
    status: str = "recorded"


class LMRouteOut(BaseModel):
    """A language model or LM cascade clients may name at the generation endpoints."""

    model: str = Field(description="The version that answers (an LM cascade's small model).")
    large: str | None = Field(description="An LM cascade's large model; null for a single model.")
    threshold: float | None = Field(description="Mean log-probability below which an LM cascade escalates.")
    context_length: int = Field(description="Most prompt plus completion tokens (the smaller model's).")
    runtime: str = Field(description="What generates for the answering model: torch or ctranslate2.")
    large_runtime: str | None = Field(None, description="An LM cascade's large model's runtime.")


class ReloadRequest(Strict):
    """Which served model to reload; none: every one the server serves."""

    model: Name | None = Field(
        None,
        min_length=1,
        max_length=300,
        description="A served model reference (name, name:vN) or cascade name; omit it to reload all.",
        examples=["comp.quantize"],
    )


class ModelChange(BaseModel):
    """A served reference that now answers with another version."""

    ref: str = Field(description="The reference clients name (or a cascade's small or large model).")
    old: str = Field(description="The version that answered before the swap, released once drained.")
    new: str = Field(description="The version that answers every request arriving after the swap.")


class ReloadResponse(BaseModel):
    """What a reload swapped and what it left as it was."""

    changed: list[ModelChange]
    unchanged: dict[str, str] = Field(description="Served reference -> the version that keeps answering.")
    routes: list[str] = Field(
        description="Models and cascades clients name that now answer with a new version."
    )
    released: list[str] = Field(
        description="Old versions unloaded after their requests in flight were answered."
    )


class ErrorOut(BaseModel):
    """Every error: a code, a message that says what to do, and the limit hit, if any."""

    error: str
    message: str
    limit: str | None = None


class OpenAIErrorDetail(BaseModel):
    """An error as OpenAI clients read it: the same code, message and limit as :class:`ErrorOut`."""

    message: str
    type: Literal["invalid_request_error", "server_error"]
    param: str | None = None
    code: str


class OpenAIErrorOut(BaseModel):
    """Every error of the OpenAI-compatible routes (``/v1/completions``, ``/v1/chat/completions``)."""

    error: OpenAIErrorDetail


class HealthResponse(BaseModel):
    """The server is up."""

    status: str = Field(description="Always 'ok'.")
    version: str = Field(description="The fanbu version serving.")


class RouteOut(BaseModel):
    """A model or cascade clients may name."""

    model: str = Field(description="The version that answers (a cascade's small model).")
    large: str | None = Field(description="A cascade's large model; null for a single model.")
    threshold: float | None = Field(description="A cascade's escalation threshold; null for a single model.")
    heads: dict[str, list[str]] = Field(description="Head -> its label names.")


class ModelsResponse(BaseModel):
    """The models and cascades loaded so far (others load on first use, unless only_listed)."""

    routes: dict[str, RouteOut] = Field(description="Name clients send -> what answers it.")
    lm_routes: dict[str, LMRouteOut] = Field(
        default_factory=dict, description="Language models: name clients send -> what answers it."
    )
