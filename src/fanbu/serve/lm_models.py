"""Served language models: registry refs of kind ``causal_lm`` loaded once, and prompts made ready.

A prompt is a text (``/v1/generate``, ``/v1/completions``) or a list of chat messages rendered with the
model's own chat template (``/v1/chat/completions``); either way it is checked against the model's
context length before any token is generated, so a request that cannot fit is refused with a 422
naming the limit instead of failing, or being cut, half-way through.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch

from fanbu.errors import FanbuError, ModelError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.loading import handle_kind
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace
from fanbu.serve.errors import ApiError
from fanbu.serve.lm_engine import Output, Sampling, generate

LM_KIND = "causal_lm"


class NotAnLMError(FanbuError):
    """The model exists but is not a causal language model."""


@dataclass(frozen=True)
class Prompt:
    """A prompt made ready for one model: the text it sees and its token ids."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class ServedLM:
    """A loaded causal LM: its record, handle, context length and end-of-sequence tokens."""

    record: ModelRecord
    handle: CausalLMHandle
    context_length: int
    eos_ids: frozenset[int]

    def prompt(self, text: str | None = None, messages: list[dict[str, str]] | None = None) -> Prompt:
        """``text``, or ``messages`` through the chat template, tokenized (blocking)."""
        tokenizer = self.handle.tokenizer
        if messages is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise ApiError(
                    422,
                    "no_chat_template",
                    f"model {self.record.id} has no chat template, so it cannot take chat messages: "
                    "send a plain prompt to /v1/completions or /v1/generate",
                )
            text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(tokenizer(text or "")["input_ids"])
            while ids and ids[-1] in self.eos_ids:  # a template that closes a text (BERT-style): continue it
                ids.pop()
        if not ids:
            raise ApiError(422, "empty_prompt", "the prompt has no tokens: send some text")
        return Prompt(text or "", ids)

    def budget(self, prompt: Prompt, max_tokens: int | None, default: int) -> int:
        """New tokens to generate; a 422 naming the context length when the prompt cannot fit."""
        room = self.context_length - len(prompt.ids)
        if room < 1 or (max_tokens is not None and max_tokens > room):
            asked = f" plus max_tokens {max_tokens}" if max_tokens is not None else ""
            raise ApiError(
                422,
                "context_length_exceeded",
                f"the prompt has {len(prompt.ids)} tokens{asked}; model {self.record.id}'s context "
                f"length is {self.context_length} tokens: shorten the prompt or lower max_tokens",
                "context_length",
            )
        return max_tokens if max_tokens is not None else min(default, room)

    def run(self, prompt: Prompt, sampling: Sampling, on_text: Any = None, cancelled: Any = None) -> Output:
        """Generate (blocking; run in a worker thread)."""
        return generate(
            self.handle.model,
            self.handle.tokenizer,
            prompt.ids,
            sampling,
            set(self.eos_ids),
            on_text,
            cancelled,
        )


def check_lm(record: ModelRecord) -> None:
    """Raise :class:`NotAnLMError` unless ``record`` is a causal language model."""
    kind = record.kind if record.kind == LM_KIND else handle_kind(record.path)
    if kind != LM_KIND:
        raise NotAnLMError(
            f"model {record.id} is a {kind!r} model, not a causal language model: classify with it at "
            "/v1/predict; /v1/generate and /v1/*completions serve models of kind causal_lm"
        )


def load_lm(record: ModelRecord) -> ServedLM:
    """Load ``record``'s causal LM for serving: eval mode for good, warmed up by one token."""
    check_lm(record)
    try:
        handle = CausalLMHandle.load(record.path)
    except ModelError as exc:
        raise NotAnLMError(f"model {record.id}: {exc}") from None
    handle.model.eval()
    config = handle.model.config
    eos = config.eos_token_id
    eos_ids = {*(eos if isinstance(eos, list) else [eos]), handle.tokenizer.eos_token_id} - {None}
    served = ServedLM(record, handle, int(config.max_position_embeddings), frozenset(eos_ids))
    with torch.inference_mode():
        handle.model(input_ids=torch.tensor([[next(iter(eos_ids), 0)]]))  # (1, 1): builds lazy state once
    return served


class LMPool:
    """Loads each referenced causal LM once; safe to call from several threads.

    A ref without a version stays on the version it first resolved to until a reload
    (:mod:`fanbu.serve.lm_reload`) loads a newer one with :meth:`load`, points the ref at it with
    :meth:`pin` and drops the old one with :meth:`release`, as :class:`~fanbu.serve.models.ModelPool`
    does for classifiers.
    """

    def __init__(self, registry: Registry) -> None:
        self.workspace = Workspace(registry)
        self._by_ref: dict[str, ServedLM] = {}
        self._by_id: dict[str, ServedLM] = {}
        self._lock = threading.Lock()

    def get(self, ref: str) -> ServedLM:
        """Resolve and load ``ref`` (once).

        Raises:
            UnknownModelError: nothing is registered under that name or version.
            NotAnLMError: the model is not a causal LM.
        """
        served = self._by_ref.get(ref)
        if served is not None:
            return served
        with self._lock:
            if ref not in self._by_ref:
                record = self.workspace.resolve(ref)
                check_lm(record)
                self._by_ref[ref] = self._by_id.get(record.id) or load_lm(record)
                self._by_id[record.id] = self._by_ref[ref]
            return self._by_ref[ref]

    def load(self, record: ModelRecord) -> ServedLM:
        """``record`` loaded and warmed up (or the copy already loaded), without pointing any ref at it.

        Raises:
            NotAnLMError: the model is not a causal LM, or its directory does not load.
        """
        served = self._by_id.get(record.id)
        return served if served is not None else load_lm(record)

    def pin(self, ref: str, served: ServedLM) -> None:
        """Point ``ref`` at ``served`` (a reload's swap); later :meth:`get` calls return it."""
        with self._lock:
            self._by_id.setdefault(served.record.id, served)
            self._by_ref[ref] = served

    def release(self, model_id: str) -> bool:
        """Drop ``model_id`` unless a ref still points to it; whether it was dropped."""
        with self._lock:
            if model_id not in self._by_id or any(s.record.id == model_id for s in self._by_ref.values()):
                return False
            del self._by_id[model_id]
            return True

    def loaded(self) -> list[str]:
        """Ids of the loaded causal LMs."""
        return sorted(self._by_id)

    def is_lm(self, ref: str) -> bool:
        """Whether ``ref`` resolves to a causal LM (blocking: reads the registry)."""
        record = self.workspace.resolve(ref)
        try:
            check_lm(record)
        except NotAnLMError:
            return False
        return True
