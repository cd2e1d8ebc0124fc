"""Label-conditioned text from a causal LM: few-shot prompts built from the public slice, sampled in batches.

Each prompt shows ``shots`` examples of one label (drawn anew per prompt, so prompts differ) and asks for
another; an instruction-tuned generator gets it through its chat template, any other as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fanbu.errors import DomainError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.synthetic.config import LMAugmentConfig


@dataclass(frozen=True)
class Generated:
    """One generated text, the label it was asked for and the prompt that asked."""

    text: str
    label: str
    prompt: str


_LEAD = re.compile(r"^(?:(?:example|text)\s*\d*\s*:\s*)+", re.IGNORECASE)


def clean(text: str) -> str:
    """Whitespace collapsed and a leading ``Example N:`` label (echoed from the prompt) dropped."""
    return _LEAD.sub("", " ".join(text.split()))


def _cut(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def build_prompt(label: str, examples: Sequence[str], example_words: int = 40) -> str:
    """The request for one more ``label`` text after ``examples`` of it (each cut to ``example_words``)."""
    shown = "\n".join(f"Example {i + 1}: {_cut(t, example_words)}" for i, t in enumerate(examples))
    return (f"Here are short texts of the category \"{label}\".\n{shown}\n"
            f"Write one new, different text of the category \"{label}\" in the same style. Reply with the text only.")


def _check_examples(examples: Mapping[str, Sequence[str]], labels: Sequence[str]) -> None:
    if not labels:
        raise DomainError("augment.lm: no labels to generate for; give the domain's label names")
    for label in labels:
        if not examples.get(label):
            raise DomainError(
                f"augment.lm: label {label!r} has no examples to prompt with; add labelled {label!r} texts to the "
                "public slice (or lower augment.lm.shots, or leave the label out)"
            )


def _render(handle: CausalLMHandle, prompt: str) -> str:
    if getattr(handle.tokenizer, "chat_template", None):
        return handle.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt + "\n"


def _prompts(examples: Mapping[str, Sequence[str]], labels: Sequence[str], config: LMAugmentConfig,
             seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for label in labels:
        pool = list(examples[label])
        for _ in range(config.per_label):
            picked = rng.choice(len(pool), size=min(config.shots, len(pool)), replace=False)
            out.append((label, build_prompt(label, [pool[i] for i in picked], config.example_words)))
    return out


@torch.no_grad()
def generate_texts(handle: CausalLMHandle, examples: Mapping[str, Sequence[str]], labels: Sequence[str],
                   config: LMAugmentConfig, seed: int = 0) -> list[Generated]:
    """``config.per_label`` sampled texts for each of ``labels``, prompted with ``examples[label]``.

    Raises:
        DomainError: no labels, or a label without examples to prompt with.
    """
    _check_examples(examples, labels)
    tokenizer, model = handle.tokenizer, handle.model
    asks = _prompts(examples, labels, config, seed)
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = tokenizer.truncation_side = "left"  # continue from each prompt's end; cut its start
    out: list[Generated] = []
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(asks), config.batch_size):
                out += _batch(handle, asks[start : start + config.batch_size], config)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return out


def _batch(handle: CausalLMHandle, chunk: list[tuple[str, str]], config: LMAugmentConfig) -> list[Generated]:
    tokenizer = handle.tokenizer
    rendered = [_render(handle, prompt) for _, prompt in chunk]
    batch = tokenizer(rendered, return_tensors="pt", padding=True, truncation=True,
                      max_length=config.max_prompt_tokens, add_special_tokens=False)
    ids = handle.model.generate(
        **batch, do_sample=True, temperature=config.temperature, top_p=config.top_p,
        max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
    )  # (batch, prompt + new)
    new = ids[:, batch["input_ids"].shape[1] :]  # (batch, new)
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [Generated(clean(text), label, prompt) for (label, prompt), text in zip(chunk, texts, strict=True)]
