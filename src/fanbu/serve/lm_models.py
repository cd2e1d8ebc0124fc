"""Served language models: registry refs of kind ``causal_lm`` loaded once, and prompts made ready.

Each loaded model carries the engine that generates for it (``generation.runtime``): PyTorch on the
saved fp32 weights (:class:`~fanbu.serve.lm_engine.TorchEngine`), or the CTranslate2 int8 export that
``fanbu derive`` writes under ``ctranslate2/`` (:class:`~fanbu.serve.lm_ct2.CT2Engine`, which loads no
PyTorch weights). ``auto`` takes the export where there is one and ctranslate2 is installed. A reload
loads a new version the same way, so the version that answers after it says its own runtime.

A prompt is a text (``/v1/generate``, ``/v1/completions``) or a list of chat messages rendered with the
model's own chat template (``/v1/chat/completions``); either way it is checked against the model's
context length before any token is generated, so a request that cannot fit is refused with a 422
naming the limit instead of failing, or being cut, half-way through.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import ConfigError, FanbuError, ModelError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.loading import handle_kind
from fanbu.models.sources import ResolvedSource, load_pretrained
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import Workspace
from fanbu.serve.errors import ApiError
from fanbu.serve.lm_config import GenerationLimits, LMRuntime
from fanbu.serve.lm_ct2 import CT2_DIR, CT2Engine, ct2_export, ct2_installed
from fanbu.serve.lm_engine import Engine, Output, Sampling, TorchEngine

LM_KIND = "causal_lm"


class NotAnLMError(FanbuError):
    """The model exists but is not a causal language model."""


class NoRuntimeError(ConfigError):
    """``generation.runtime`` names a runtime the model cannot run on (no export, or not installed)."""


@dataclass(frozen=True)
class Prompt:
    """A prompt made ready for one model: the text it sees and its token ids."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class ServedLM:
    """A loaded causal LM: its record, tokenizer, context length, end-of-sequence tokens and engine."""

    record: ModelRecord
    tokenizer: PreTrainedTokenizerBase
    context_length: int
    eos_ids: frozenset[int]
    engine: Engine

    @property
    def runtime(self) -> str:
        """What generates: ``torch`` or ``ctranslate2``."""
        return self.engine.runtime

    @property
    def handle(self) -> CausalLMHandle | None:
        """The PyTorch model and tokenizer, when PyTorch generates (None on CTranslate2)."""
        return self.engine.handle if isinstance(self.engine, TorchEngine) else None

    def prompt(self, text: str | None = None, messages: list[dict[str, str]] | None = None) -> Prompt:
        """``text``, or ``messages`` through the chat template, tokenized (blocking)."""
        tokenizer = self.tokenizer
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
        """Generate with this model's engine (blocking; run in a worker thread)."""
        return self.engine.run(prompt.ids, sampling, self.eos_ids, on_text, cancelled)


def check_lm(record: ModelRecord) -> None:
    """Raise :class:`NotAnLMError` unless ``record`` is a causal language model."""
    kind = record.kind if record.kind == LM_KIND else handle_kind(record.path)
    if kind != LM_KIND:
        raise NotAnLMError(
            f"model {record.id} is a {kind!r} model, not a causal language model: classify with it at "
            "/v1/predict; /v1/generate and /v1/*completions serve models of kind causal_lm"
        )


def choose_runtime(record: ModelRecord, runtime: LMRuntime) -> str:
    """``torch`` or ``ctranslate2`` for ``record`` under ``generation.runtime`` = ``runtime``.

    Raises:
        NoRuntimeError: ``ctranslate2`` was asked for but the model has no export or the package is
            missing; the message says what to do.
    """
    exported = ct2_export(record.path) is not None
    if runtime == "auto":
        return "ctranslate2" if exported and ct2_installed() else "torch"
    if runtime == "ctranslate2" and not exported:
        raise NoRuntimeError(
            f"generation.runtime is ctranslate2 but model {record.id} has no CTranslate2 export "
            f"({record.path}/{CT2_DIR}/model.bin): derive it with the export stage's `ctranslate2: true` "
            "(fanbu derive), or set generation.runtime to auto or torch"
        )
    if runtime == "ctranslate2" and not ct2_installed():
        raise NoRuntimeError(
            "generation.runtime is ctranslate2 but the ctranslate2 package is not installed: "
            "pip install 'fanbu[lm]', or set generation.runtime to auto or torch"
        )
    return runtime


def _eos_ids(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    eos = config.eos_token_id
    return frozenset({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None})


def load_lm(
    record: ModelRecord,
    runtime: LMRuntime = "auto",
    threads: int | None = None,
    workers: int = GenerationLimits().workers,
) -> ServedLM:
    """Load ``record``'s causal LM for serving on ``runtime``, warmed up by one token.

    ``threads`` is CTranslate2's intra-op thread count (default: torch's, which the server's
    ``threads`` sets for the process), ``workers`` its replicas (``generation.workers``).

    Raises:
        NotAnLMError: the model is not a causal LM, or its directory does not load.
        NoRuntimeError: ``runtime`` is ctranslate2 and the model or the environment cannot run it.
    """
    check_lm(record)
    chosen = choose_runtime(record, runtime)
    try:
        if chosen == "torch":
            return _load_torch(record)
        return _load_ct2(record, threads or torch.get_num_threads(), workers)
    except ModelError as exc:
        raise NotAnLMError(f"model {record.id}: {exc}") from None


def _load_torch(record: ModelRecord) -> ServedLM:
    handle = CausalLMHandle.load(record.path)
    handle.model.eval()
    config = handle.model.config
    eos_ids = _eos_ids(config, handle.tokenizer)
    served = ServedLM(
        record, handle.tokenizer, int(config.max_position_embeddings), eos_ids, TorchEngine(handle)
    )
    with torch.inference_mode():
        handle.model(input_ids=torch.tensor([[next(iter(eos_ids), 0)]]))  # (1, 1): builds lazy state once
    return served


def _load_ct2(record: ModelRecord, threads: int, workers: int) -> ServedLM:
    """The tokenizer and config from the model directory, the weights from its CTranslate2 export."""
    resolved = ResolvedSource(str(Path(record.path).resolve()), None, "local", Path(record.path).name)
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolved)
    config = load_pretrained(AutoConfig.from_pretrained, resolved)
    eos_ids = _eos_ids(config, tokenizer)
    engine = CT2Engine(Path(record.path) / CT2_DIR, tokenizer, workers, threads)
    engine.warm_up(next(iter(eos_ids), 0))
    return ServedLM(record, tokenizer, int(config.max_position_embeddings), eos_ids, engine)


class LMPool:
    """Loads each referenced causal LM once, on ``generation.runtime``; safe to call from several threads.

    A ref without a version stays on the version it first resolved to until a reload
    (:mod:`fanbu.serve.lm_reload`) loads a newer one with :meth:`load`, points the ref at it with
    :meth:`pin` and drops the old one with :meth:`release`, as :class:`~fanbu.serve.models.ModelPool`
    does for classifiers.
    """

    def __init__(
        self, registry: Registry, generation: GenerationLimits | None = None, threads: int | None = None
    ) -> None:
        self.workspace = Workspace(registry)
        self.generation = generation or GenerationLimits()
        self.threads = threads
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
                self._by_ref[ref] = self._by_id.get(record.id) or self._load(record)
                self._by_id[record.id] = self._by_ref[ref]
            return self._by_ref[ref]

    def load(self, record: ModelRecord) -> ServedLM:
        """``record`` loaded and warmed up (or the copy already loaded), without pointing any ref at it.

        Raises:
            NotAnLMError: the model is not a causal LM, or its directory does not load.
        """
        served = self._by_id.get(record.id)
        return served if served is not None else self._load(record)

    def _load(self, record: ModelRecord) -> ServedLM:
        return load_lm(record, self.generation.runtime, self.threads, self.generation.workers)

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
