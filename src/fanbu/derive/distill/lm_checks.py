"""Checks and evaluation shared by causal-LM distillation and fine-tuning: texts, vocabularies, perplexity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from fanbu.errors import DomainError, ModelError
from fanbu.evaluate.metrics import perplexity
from fanbu.models.causal_lm import CausalLMHandle


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    """A non-empty list of strings, or a :class:`DomainError` that says which item is wrong."""
    if isinstance(texts, str) or len(texts) == 0:
        raise DomainError(f"{what}: pass a non-empty list of texts")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise DomainError(f"{what}: item {index} is a {type(text).__name__}, not a str")
    return list(texts)


def perplexity_evaluator(
    handle: CausalLMHandle, validation: Sequence[str], batch_size: int
) -> Callable[[nn.Module], dict[str, float]]:
    """Evaluation for causal-LM runs: ``ppl`` and ``score = -ppl`` (higher is better) on ``validation``."""
    texts = check_texts(validation, "validation")

    def evaluate(model: nn.Module) -> dict[str, float]:
        ppl = perplexity(model, handle.tokenizer, texts, batch_size=batch_size, max_length=handle.max_length)
        return {"ppl": ppl, "score": -ppl}

    return evaluate


def check_vocabulary(student: CausalLMHandle, teacher: CausalLMHandle) -> None:
    """Raise unless the two models are distinct and share tokenizer and vocabulary."""
    if student.model is teacher.model:
        raise ModelError(
            "student and teacher are the same model object; distil into a copy or a pruned model"
        )
    s_vocab, t_vocab = student.tokenizer.get_vocab(), teacher.tokenizer.get_vocab()
    if s_vocab != t_vocab:
        raise ModelError(
            f"causal-LM distillation compares next-token distributions, so student ({len(s_vocab)} tokens) and "
            f"teacher ({len(t_vocab)} tokens) need the same tokenizer; prune depth/width but keep the vocabulary"
        )
    needed = len(s_vocab)
    for who, handle in (("student", student), ("teacher", teacher)):
        size = int(handle.model.get_output_embeddings().weight.shape[0])
        if size < needed:
            raise ModelError(
                f"the {who}'s output layer has {size} rows for a {needed}-token tokenizer; re-create it"
            )
