"""The causal-LM gate: promote a candidate LM only if no domain, no held-out text and no prompt regresses.

Three kinds of task, each scored higher-is-better so that the classifiers' verdict types
(:class:`~fanbu.feedback.gate.promotion.TaskResult`, :class:`GateDecision`) and their registry writes
(:func:`~fanbu.feedback.gate.promotion.apply_decision`) apply unchanged:

- each feedback domain's **gate** split: ``score = -log perplexity``;
- held-out general text, a corpus never used in feedback (20 Newsgroups in the shipped recipe): same;
- instruction prompts with stored reference answers (:data:`PROMPTS_FILE`): ``score`` = the mean over
  prompts of the reference answer's mean per-token log-probability given the prompt.

A perplexity may rise by ``tolerance`` (relative: 0.02 is 2%) and the prompt score fall by
``prompt_tolerance`` nats per token. The candidate's mean gate score is the mean over the domains only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import Field

from fanbu.config import Strict
from fanbu.errors import ConfigError, DomainError
from fanbu.evaluate.metrics import perplexity
from fanbu.feedback.gate.promotion import GateDecision, TaskResult
from fanbu.feedback.shared.prompts import completion_nll, pair_batch
from fanbu.models.causal_lm import CausalLMHandle

PROMPTS_FILE = Path(__file__).with_name("lm_prompts.json")
PROMPTS_TASK = "prompts"
Scores = dict[str, dict[str, float]]  # task -> {"score": ..., "ppl" or "logprob": ...}


class LMGateConfig(Strict):
    """When a candidate LM may replace the champion."""

    tolerance: float = Field(
        0.02,
        ge=0,
        description="How far (relative: 0.02 = 2%) a domain's or held-out text's perplexity may rise.",
    )
    prompt_tolerance: float = Field(
        0.05,
        ge=0,
        description="How far (nats per token) the reference answers' mean log-probability may fall.",
    )
    require_mean_not_worse: bool = Field(
        True, description="Also reject a candidate whose mean domain log-perplexity is above the champion's."
    )
    batch_size: int = Field(4, ge=1, description="Texts per forward pass.")
    prompts_file: str | None = Field(
        None, description="A JSON file of {prompts: [{prompt, reference}, ...]}; null: the packaged set."
    )


@dataclass
class LMGateData:
    """What the gate reads: domain -> its gate texts, held-out name -> texts, (prompt, reference) pairs."""

    domains: dict[str, list[str]]
    heldout: dict[str, list[str]] = field(default_factory=dict)
    prompts: list[tuple[str, str]] = field(default_factory=list)

    def tasks(self) -> list[str]:
        """Every task the gate scores: domains, held-out texts, then the prompts."""
        return [*sorted(self.domains), *sorted(self.heldout), *([PROMPTS_TASK] if self.prompts else [])]


def load_prompts(path: str | Path | None = None) -> list[tuple[str, str]]:
    """The (prompt, reference answer) pairs of ``path`` (default: the packaged :data:`PROMPTS_FILE`)."""
    source = Path(path) if path is not None else PROMPTS_FILE
    try:
        rows = json.loads(source.read_text(encoding="utf-8"))["prompts"]
        pairs = [(str(r["prompt"]), str(r["reference"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DomainError(
            f'{source}: not a prompt set ({exc}); write {{"prompts": [{{"prompt": ..., "reference": ...}}]}}'
        ) from None
    if not pairs:
        raise DomainError(f"{source}: no prompts; add at least one {{prompt, reference}}")
    return pairs


@torch.no_grad()
def prompt_logprob(handle: CausalLMHandle, prompts: Sequence[tuple[str, str]], batch_size: int) -> float:
    """Mean over prompts of the reference answer's mean per-token log-probability given the prompt."""
    model = handle.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_prompt: list[float] = []
    try:
        for start in range(0, len(prompts), batch_size):
            inputs, labels = pair_batch(
                handle.tokenizer, prompts[start : start + batch_size], handle.max_length
            )
            logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits  # (batch, seq, vocab)
            nll, counted = completion_nll(logits, labels.to(device))  # (batch,), (batch,)
            per_prompt += (-nll / counted.clamp(min=1)).tolist()
    finally:
        model.train(was_training)
    return sum(per_prompt) / len(per_prompt)


def score_lm(handle: CausalLMHandle, data: LMGateData, config: LMGateConfig) -> Scores:
    """Every gate task's score (higher is better) and its plain metric (``ppl`` or ``logprob``)."""
    scores: Scores = {}
    for task, texts in [*sorted(data.domains.items()), *sorted(data.heldout.items())]:
        if not texts:
            raise ConfigError(f"gate: no texts for {task!r}; give its gate split")
        ppl = perplexity(handle.model, handle.tokenizer, texts, config.batch_size, handle.max_length)
        scores[task] = {"score": -math.log(ppl), "ppl": ppl}
    if data.prompts:
        logprob = prompt_logprob(handle, data.prompts, config.batch_size)
        scores[PROMPTS_TASK] = {"score": logprob, "logprob": logprob}
    return scores


def _tolerance(task: str, config: LMGateConfig) -> float:
    return config.prompt_tolerance if task == PROMPTS_TASK else math.log1p(config.tolerance)


def lm_gate(
    candidate: CausalLMHandle,
    champion: CausalLMHandle,
    data: LMGateData,
    config: LMGateConfig | None = None,
    champion_scores: Scores | None = None,
) -> GateDecision:
    """Score both LMs on every gate task; promote only if none regresses beyond its tolerance."""
    config = config or LMGateConfig()
    if not data.domains:
        raise ConfigError("gate: no domain gate splits; pass {domain: texts} of each domain's gate split")
    champ = champion_scores if champion_scores is not None else score_lm(champion, data, config)
    cand = score_lm(candidate, data, config)
    results = {
        t: TaskResult(cand[t]["score"], champ[t]["score"], _tolerance(t, config)) for t in data.tasks()
    }
    domains = sorted(data.domains)
    cand_mean = sum(results[d].candidate for d in domains) / len(domains)
    champ_mean = sum(results[d].champion for d in domains) / len(domains)
    problems = [_problem(t, cand, champ, config) for t in data.tasks() if not results[t].ok]
    if config.require_mean_not_worse and cand_mean < champ_mean - 1e-9:
        problems.append(
            f"mean domain perplexity {math.exp(-cand_mean):.2f} above the champion's {math.exp(-champ_mean):.2f}"
        )
    reason = (
        "rejected: " + "; ".join(problems)
        if problems
        else f"promoted: every task within tolerance on the gate splits; mean domain perplexity "
        f"{math.exp(-champ_mean):.2f} -> {math.exp(-cand_mean):.2f}"
    )
    return GateDecision(not problems, reason, "neg_log_ppl", results, cand_mean, champ_mean, cand, champ)


def _problem(
    task: str,
    cand: Mapping[str, Mapping[str, float]],
    champ: Mapping[str, Mapping[str, float]],
    config: LMGateConfig,
) -> str:
    if task == PROMPTS_TASK:
        return (
            f"prompts: reference log-prob {cand[task]['logprob']:.3f} vs champion {champ[task]['logprob']:.3f} "
            f"(tolerance {config.prompt_tolerance} nats/token)"
        )
    change = cand[task]["ppl"] / champ[task]["ppl"] - 1
    return (
        f"{task} perplexity {cand[task]['ppl']:.2f} vs champion {champ[task]['ppl']:.2f} "
        f"({100 * change:+.1f}%, tolerance {100 * config.tolerance:.1f}%)"
    )
