"""One generation: a token loop over the KV cache, with sampling, stop strings, streaming and log-probs.

The loop is written out rather than left to ``model.generate`` because the server needs three things
per token that ``generate`` does not hand back together while it runs: the token's log-probability
(the cascade's confidence), the text decoded so far (stop strings end a completion at a character, not
a token) and a callback for each new piece of text (streaming). Temperature and top-p are transformers'
own logits warpers; sampling draws from a ``torch.Generator`` of the request's own, so one seed gives
one completion whatever else the server runs at the time.

The log-probability kept per token is the model's own (its softmax at temperature 1), whatever the
request's temperature: it measures how sure the model is of what it wrote, not how it was sampled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

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


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[int],
    sampling: Sampling,
    eos_ids: set[int],
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
    sent = 0
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
            out.token_ids.append(token)
            step_input = torch.tensor([[token]], dtype=torch.long)  # (1, 1)
            sequence = torch.cat([sequence, step_input], dim=1)  # (1, seq + 1)
            text = tokenizer.decode(out.token_ids, skip_special_tokens=True)
            hit = [i for i in (text.find(s, max(0, sent - len(s))) for s in sampling.stop) if i >= 0]
            if hit:
                out.text = text[: min(hit)]
                out.finish_reason = "stop"
                break
            out.text = text
            ready = len(text) - _held_back(text, sampling.stop)
            while ready > sent and text[ready - 1] == REPLACEMENT:
                ready -= 1
            if on_text is not None and ready > sent:
                on_text(text[sent:ready])
                sent = ready
    if on_text is not None and len(out.text) > sent:
        on_text(out.text[sent:])  # what was held back for a stop string that never came
    return out
