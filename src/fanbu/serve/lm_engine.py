"""One generation: a token loop over the KV cache, with sampling, stop strings, streaming and log-probs.

The loop is written out rather than left to ``model.generate`` because the server needs three things
per token that ``generate`` does not hand back together while it runs: the token's log-probability
(the cascade's confidence), the text decoded so far (stop strings end a completion at a character, not
a token) and a callback for each new piece of text (streaming). Temperature and top-p are transformers'
own logits warpers; sampling draws from a ``torch.Generator`` of the request's own, so one seed gives
one completion whatever else the server runs at the time.

The log-probability kept per token is the model's own (its softmax at temperature 1), whatever the
request's temperature: it measures how sure the model is of what it wrote, not how it was sampled.

This loop is the PyTorch :class:`Engine`; the CTranslate2 one (:mod:`fanbu.serve.lm_ct2`) keeps the same
contract, and both turn tokens into text, stop strings and streamed pieces with :class:`TextStream`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.models.causal_lm import CausalLMHandle

REPLACEMENT = "\ufffd"  # what decoding shows for a character whose bytes are not all generated yet


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: ``temperature`` 0 is greedy; ``seed`` makes sampling repeatable."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Output:
    """A finished completion: its text, tokens, their log-probabilities and why it ended."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per generated token, the eos included
    finish_reason: str = "length"  # stop (eos or a stop string) | length (max_tokens)

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability of the generated tokens (0.0 for an empty completion)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class Engine(Protocol):
    """What generates for a served LM: PyTorch (:class:`TorchEngine`) or CTranslate2 (:mod:`fanbu.serve.lm_ct2`)."""

    runtime: str  # torch | ctranslate2

    def run(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        eos_ids: frozenset[int],
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Output:
        """Complete ``prompt_ids`` (blocking; run it in a worker thread), calling ``on_text`` per new piece."""
        ...


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still begin a stop string (not sent yet)."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


def _pick(
    scores: torch.Tensor,
    sequence: torch.Tensor,
    sampling: Sampling,
    warpers: LogitsProcessorList,
    generator: torch.Generator | None,
) -> int:
    """The next token from ``scores`` (1, vocab) given the ``sequence`` so far (1, seq)."""
    if sampling.temperature == 0.0:
        return int(scores.argmax(dim=-1).item())
    warped = warpers(sequence, scores)  # (1, vocab), -inf outside the top-p nucleus
    probs = torch.softmax(warped, dim=-1)  # (1, vocab)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class TextStream:
    """Generated token ids turned into text as they come, for both runtimes.

    Stop strings end a completion at a character, not a token. A new piece goes to ``on_text`` once it is
    sure: text that could still begin a stop string is held back, and so is a trailing replacement
    character (a character whose bytes are not all generated yet).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stops: Sequence[str],
        out: Output,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self.tokenizer, self.stops, self.out, self.on_text = tokenizer, stops, out, on_text
        self.sent = 0  # characters of out.text already passed to on_text

    def add(self, token: int) -> bool:
        """Append a generated (non-eos) ``token``; whether a stop string ended the completion."""
        out = self.out
        out.token_ids.append(token)
        text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
        hit = [i for i in (text.find(s, max(0, self.sent - len(s))) for s in self.stops) if i >= 0]
        if hit:
            out.text = text[: min(hit)]
            out.finish_reason = "stop"
            return True
        out.text = text
        ready = len(text) - _held_back(text, self.stops)
        while ready > self.sent and text[ready - 1] == REPLACEMENT:
            ready -= 1
        if self.on_text is not None and ready > self.sent:
            self.on_text(text[self.sent : ready])
            self.sent = ready
        return False

    def flush(self) -> None:
        """Send what was held back for a stop string that never came."""
        if self.on_text is not None and len(self.out.text) > self.sent:
            self.on_text(self.out.text[self.sent :])
            self.sent = len(self.out.text)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[int],
    sampling: Sampling,
    eos_ids: set[int] | frozenset[int],
    on_text: Callable[[str], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Output:
    """Complete ``prompt_ids`` (blocking; run it in a worker thread), calling ``on_text`` per new piece."""
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator().manual_seed(sampling.seed)
    warpers = LogitsProcessorList()
    if sampling.temperature not in (0.0, 1.0):
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    sequence = torch.tensor([prompt_ids], dtype=torch.long)  # (1, prompt)
    step_input = sequence
    cache = DynamicCache()
    out = Output(text="")
    stream = TextStream(tokenizer, sampling.stop, out, on_text)
    with torch.inference_mode():
        for _ in range(sampling.max_tokens):
            if cancelled is not None and cancelled.is_set():
                out.finish_reason = "cancelled"
                break
            logits = model(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1).logits
            scores = logits[:, -1, :].float()  # (1, vocab)
            token = _pick(scores, sequence, sampling, warpers, generator)
            out.logprobs.append(float(torch.log_softmax(scores, dim=-1)[0, token]))
            if token in eos_ids:
                out.finish_reason = "stop"
                break
            step_input = torch.tensor([[token]], dtype=torch.long)  # (1, 1)
            sequence = torch.cat([sequence, step_input], dim=1)  # (1, seq + 1)
            if stream.add(token):
                break
    stream.flush()
    return out


class TorchEngine:
    """Generation with the PyTorch model (fp32, the model as saved)."""

    runtime = "torch"

    def __init__(self, handle: CausalLMHandle) -> None:
        self.handle = handle

    def run(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        eos_ids: frozenset[int],
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Output:
        """:func:`generate` with this engine's model (blocking)."""
        return generate(
            self.handle.model, self.handle.tokenizer, prompt_ids, sampling, eos_ids, on_text, cancelled
        )
