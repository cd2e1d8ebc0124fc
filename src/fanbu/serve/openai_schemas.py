"""Generation request and response bodies: fanbu's ``/v1/generate`` and OpenAI's completions and chat.

The OpenAI bodies follow the API reference's field names and shapes, so the official client (and any
tool written for it) can call the server; fields fanbu does not implement (``n`` above 1, penalties,
``logprobs``, tools) are refused by name with a 422 rather than silently ignored. Answers carry two
extra fields, ``escalated`` and ``mean_logprob``, which OpenAI clients keep as extras.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fanbu.config import Strict
from fanbu.serve.schemas import Name

ROLES = ("system", "user", "assistant")
Stop = str | list[str] | None


class SamplingFields(Strict):
    """What every generation request may set (OpenAI's names, ranges and defaults)."""

    max_tokens: int | None = Field(
        None, ge=1, description="Most new tokens; default: generation.default_max_tokens, within the context."
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 is greedy; higher samples more freely.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Sample only from the top-p probability mass.")
    stop: Stop = Field(None, description="Up to generation.max_stop strings that end the completion.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Repeatable sampling.")
    stream: bool = Field(False, description="Send the completion as server-sent events as it is generated.")


class GenerateRequest(SamplingFields):
    """fanbu's own generation request."""

    model: Name = Field(min_length=1, max_length=300, description="name, name:vN, or an LM cascade name.")
    prompt: str = Field(min_length=1, description="The text to continue.")


class StreamOptions(Strict):
    """OpenAI's stream options."""

    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")


class OpenAIFields(SamplingFields):
    """Fields the OpenAI endpoints share."""

    model: Name = Field(min_length=1, max_length=300, description="name, name:vN, or an LM cascade name.")
    n: int = Field(1, ge=1, le=1, description="Completions per prompt: only 1 is served.")
    user: str | None = Field(None, max_length=300, description="An end-user id (accepted, not stored).")
    stream_options: StreamOptions | None = None


class CompletionRequest(OpenAIFields):
    """``POST /v1/completions``: one prompt."""

    prompt: str = Field(min_length=1, description="The text to continue (one string).")


class ChatMessage(Strict):
    """One chat message."""

    role: Literal["system", "user", "assistant"] = Field(description="system, user or assistant.")
    content: str = Field(description="The message text.")
    name: str | None = Field(None, max_length=64, description="A participant name (accepted, not used).")


class ChatRequest(OpenAIFields):
    """``POST /v1/chat/completions``: messages rendered with the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens.")


class Usage(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    """fanbu's generation answer."""

    id: str = Field(description="Generation id, for /v1/feedback.")
    model: str = Field(description="The model version that answered (name:vN).")
    text: str
    finish_reason: str = Field(description="stop (eos or a stop string) or length (max_tokens).")
    mean_logprob: float = Field(description="Mean log-probability of the answering model's tokens.")
    escalated: bool = Field(description="Whether an LM cascade passed the prompt to its large model.")
    usage: Usage


class CompletionChoice(BaseModel):
    """One completion."""

    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    """OpenAI's ``text_completion`` object (also each streamed chunk's shape)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    escalated: bool | None = None
    mean_logprob: float | None = None


class AssistantMessage(BaseModel):
    """The answer message."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One chat completion."""

    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatResponse(BaseModel):
    """OpenAI's ``chat.completion`` object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    escalated: bool | None = None
    mean_logprob: float | None = None


class Delta(BaseModel):
    """A streamed piece of the answer message."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    """One streamed choice."""

    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    """OpenAI's ``chat.completion.chunk`` object."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
