"""LM routes: one causal LM, or a small-to-large cascade decided by the small LM's mean log-probability.

A cascade's small LM completes every prompt. If the mean log-probability of its tokens is below the
threshold, the large LM completes the prompt again and its completion is returned; both are logged.
The threshold is tuned from the logs as the classification cascade's is (:func:`tune_threshold` on
the small LM's logged mean log-probabilities), for a target escalation rate.

A streamed request to a cascade streams the large LM's tokens as they come when it escalates; when it
does not, the small LM's completion is sent once it is judged, so nothing is streamed that the cascade
might take back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from fanbu.collect.hashing import PrivacyMode, stored_form
from fanbu.collect.lm_store import Completion, Generation
from fanbu.serve.cascade import tune_threshold
from fanbu.serve.lm_engine import Output, Sampling
from fanbu.serve.lm_models import Prompt, ServedLM

__all__ = ["Answered", "LMRoute", "to_generation", "tune_threshold"]


@dataclass(frozen=True)
class Answered:
    """One model's completion of a request: its role, the model, the prompt it saw, its output."""

    role: str  # single | small | large
    served: ServedLM
    prompt: Prompt
    output: Output


@dataclass
class LMRoute:
    """What a client may name as the ``model`` of a generation: one LM, or a cascade (``large`` set)."""

    name: str
    small: ServedLM
    large: ServedLM | None = None
    threshold: float = 0.0

    @property
    def models(self) -> list[ServedLM]:
        """The models a request may run on, small first."""
        return [self.small] if self.large is None else [self.small, self.large]

    def complete(
        self,
        prompts: list[Prompt],
        samplings: list[Sampling],
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> list[Answered]:
        """Complete one request (blocking); ``prompts`` and ``samplings`` follow :attr:`models`."""
        if self.large is None:
            output = self.small.run(prompts[0], samplings[0], on_text, cancelled)
            return [Answered("single", self.small, prompts[0], output)]
        first = self.small.run(prompts[0], samplings[0], None, cancelled)
        small = Answered("small", self.small, prompts[0], first)
        if first.mean_logprob >= self.threshold:
            if on_text is not None and first.text:
                on_text(first.text)
            return [small]
        second = self.large.run(prompts[1], samplings[1], on_text, cancelled)
        return [small, Answered("large", self.large, prompts[1], second)]


def to_generation(
    generation_id: str, target: str, endpoint: str, answers: list[Answered], privacy: PrivacyMode
) -> Generation:
    """The log record of a completed request, prompt and completions stored under ``privacy``."""
    final = answers[-1]
    prompt, prompt_hash = stored_form(final.prompt.text, privacy)
    completions = []
    for a in answers:
        text, text_hash = stored_form(a.output.text, privacy)
        completions.append(
            Completion(
                a.role,
                a.served.record.id,
                text,
                text_hash,
                a.output.mean_logprob,
                len(a.output.token_ids),
                a.output.finish_reason,
            )
        )
    return Generation(generation_id, target, endpoint, prompt, prompt_hash, privacy, tuple(completions))
