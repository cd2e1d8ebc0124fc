"""Fine-tune an encoder (classification heads) or a causal LM, fully or with LoRA, through the one loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from peft import PeftModel

from fanbu.derive.distill.causal_lm import LM_TASK
from fanbu.derive.distill.lm_checks import check_texts, perplexity_evaluator
from fanbu.derive.distill.packing import PackedPlan, pack_texts
from fanbu.derive.finetune.config import FinetuneConfig
from fanbu.derive.finetune.lora import add_lora, merge_lora
from fanbu.errors import ConfigError, DomainError, ModelError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderHandle
from fanbu.train.batching import BatchPlan, TaskData, TextPlan
from fanbu.train.classify import train_heads
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import CausalLMLoss, causal_lm_forward

Pairs = tuple[Sequence[str], Sequence[int]]


def _check_train(handle: EncoderHandle, train: Mapping[str, Pairs]) -> None:
    if not train:
        raise DomainError("train has no tasks; pass {task: (texts, labels)} with at least one task")
    for task, (texts, labels) in train.items():
        if task not in handle.labels:
            raise ModelError(
                f"train task {task!r} has no head (heads: {', '.join(handle.labels) or 'none'}); "
                "add one with handle.add_head(name, label_names)"
            )
        if len(texts) == 0 or len(texts) != len(labels):
            raise DomainError(
                f"train task {task!r}: {len(texts)} texts but {len(labels)} labels; one label per text"
            )
        bad = sorted({int(y) for y in labels if not 0 <= int(y) < len(handle.labels[task])})
        if bad:
            raise DomainError(
                f"train task {task!r}: labels {bad[:5]} are outside 0..{len(handle.labels[task]) - 1}; "
                "fine-tuning needs labeled texts (use distillation for unlabeled ones)"
            )


def finetune(
    handle: EncoderHandle,
    train: Mapping[str, Pairs],
    config: FinetuneConfig,
    validation: Mapping[str, Pairs] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> tuple[EncoderHandle, TrainResult]:
    """Fine-tune ``handle`` (in place) on every task of ``train`` (task name = head name).

    ``full`` trains every weight. ``lora`` wraps the encoder with PEFT LoRA adapters (the heads train
    fully); with ``lora.merge`` the update is merged afterwards and the encoder is a plain Hugging Face
    model again, otherwise the handle keeps the adapter (save it with :func:`save_adapter`).

    Returns:
        The handle (the same object, trained) and how the run ended.
    """
    _check_train(handle, train)
    if isinstance(handle.model.encoder, PeftModel):
        raise ModelError(
            "the encoder already carries a LoRA adapter; merge it (merge_lora) before fine-tuning again"
        )
    if config.mode == "lora":
        handle.model.encoder = add_lora(handle.model.encoder, config.lora)
    result = train_heads(
        handle,
        train,
        config.train,
        validation,
        checkpoint_dir=checkpoint_dir,
        description=f"finetune-{config.mode}",
    )
    if config.mode == "lora" and config.lora.merge:
        merge_lora(handle)
    return handle, result


def finetune_causal_lm(
    handle: CausalLMHandle,
    texts: Sequence[str],
    config: FinetuneConfig,
    validation: Sequence[str] | None = None,
    checkpoint_dir: str | Path | None = None,
    pack_window: int | None = None,
    max_windows: int | None = None,
) -> tuple[CausalLMHandle, TrainResult]:
    """Fine-tune a causal LM (in place) on ``texts`` with the next-token loss, fully or with LoRA.

    Evaluation reports ``ppl`` and ``score = -ppl`` on ``validation``; ``train.metric`` must be one of them.
    With ``pack_window`` the texts are packed into windows of that many tokens (at most ``max_windows``;
    every token trains, none is cut off), otherwise each text is one padded, truncated example.

    Returns:
        The handle (the same object, trained; merged unless ``lora.merge`` is false) and the run's result.
    """
    if validation is not None and config.train.metric not in ("score", "ppl"):
        raise ConfigError(
            f"train.metric is {config.train.metric!r}, but causal-LM evaluation reports 'score' (-perplexity, "
            "mode max) and 'ppl' (mode min)"
        )
    if isinstance(handle.model, PeftModel):
        raise ModelError("the model already carries a LoRA adapter; merge it (merge_and_unload) first")
    plan: BatchPlan
    if pack_window is not None:
        windows = pack_texts(handle.tokenizer, check_texts(texts, "train"), pack_window, max_windows)
        plan = PackedPlan(windows, config.train.batch_size, config.train.seed)
    else:
        plan = TextPlan(
            [TaskData(LM_TASK, check_texts(texts, "train"))],
            handle.tokenize,
            batch_size=config.train.batch_size,
            seed=config.train.seed,
            group_by_length=config.train.group_by_length,
        )
    if config.mode == "lora":
        handle.model = add_lora(handle.model, config.lora, task_type="CAUSAL_LM")
    evaluate = (
        perplexity_evaluator(handle, validation, config.train.batch_size) if validation is not None else None
    )
    trainer = Trainer(
        handle.model,
        plan,
        config.train,
        [CausalLMLoss()],
        forward=causal_lm_forward,
        evaluate=evaluate,
        checkpoint_dir=checkpoint_dir,
        description=f"finetune-lm-{config.mode}",
    )
    result = trainer.fit()
    if config.mode == "lora" and config.lora.merge:
        handle.model = handle.model.merge_and_unload()
    return handle, result
