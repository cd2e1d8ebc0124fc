"""finetune(): full fine-tuning learns the task; LoRA trains only adapters and heads, merges exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from finetune_helpers import LABELS, quick
from peft import PeftModel
from transformers import BertModel

from fanbu.config import validate
from fanbu.derive.finetune import FinetuneConfig, LoraSettings, default_targets, finetune, merge_lora
from fanbu.errors import ConfigError, DomainError, ModelError
from fanbu.models import EncoderHandle
from fanbu.train.classify import evaluate_heads


def accuracy(handle: EncoderHandle, data: tuple[list[str], list[int]]) -> float:
    return evaluate_heads(handle, {"sentiment": data})["sentiment"]["accuracy"]


def logits(handle: EncoderHandle, texts: list[str]) -> torch.Tensor:
    handle.model.eval()
    with torch.no_grad():
        return handle.model(**handle.tokenize(texts), head="sentiment")


def test_full_finetune_improves_accuracy(encoder, task_data) -> None:
    before = accuracy(encoder, task_data["heldout"])
    config = FinetuneConfig(mode="full", train=quick(epochs=5))
    tuned, result = finetune(
        encoder, {"sentiment": task_data["train"]}, config, {"sentiment": task_data["validation"]}
    )
    assert tuned is encoder
    assert before <= 0.75
    assert accuracy(tuned, task_data["heldout"]) >= 0.9
    assert result.state.best is not None and result.state.best >= 0.9


def lora_config(merge: bool, **train) -> FinetuneConfig:
    return FinetuneConfig(
        mode="lora", lora=LoraSettings(r=4, alpha=8, merge=merge), train=quick(lr=1e-2, **train)
    )


def test_lora_trains_only_adapters_and_heads(encoder, task_data) -> None:
    base = {k: v.clone() for k, v in encoder.model.encoder.state_dict().items()}
    head = encoder.model.heads["sentiment"].weight.detach().clone()
    finetune(encoder, {"sentiment": task_data["train"]}, lora_config(merge=False))
    peft = encoder.model.encoder
    assert isinstance(peft, PeftModel)
    trainable = {n: p.numel() for n, p in encoder.model.named_parameters() if p.requires_grad}
    lora = {n: c for n, c in trainable.items() if ".lora_A." in n or ".lora_B." in n}
    heads = {n: c for n, c in trainable.items() if n.startswith("heads.")}
    assert trainable == {**lora, **heads}  # nothing else trains
    # r=4 on query/key/value (32->32) and attention-output (32->32), intermediate (32->64), output (64->32)
    per_layer = 4 * 4 * (32 + 32) + 4 * (32 + 64) * 2
    assert sum(lora.values()) == 2 * per_layer
    assert sum(heads.values()) == 2 * 32 + 2
    assert not any("pooler" in n for n in lora)  # the unused pooler is left alone
    state = peft.get_base_model().state_dict()
    after = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    assert after.keys() == base.keys()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # the base weights stayed frozen
    assert not torch.equal(encoder.model.heads["sentiment"].weight, head)


def test_merged_outputs_equal_unmerged(encoder, task_data) -> None:
    texts = task_data["heldout"][0][:12]
    plain = logits(copy.deepcopy(encoder), texts)
    finetune(encoder, {"sentiment": task_data["train"]}, lora_config(merge=False, epochs=2))
    adapted = logits(encoder, texts)
    assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapter changed the model
    merge_lora(encoder)
    assert type(encoder.model.encoder) is BertModel
    assert torch.allclose(logits(encoder, texts), adapted, atol=1e-5)


def test_lora_merge_true_gives_a_plain_encoder(encoder, task_data) -> None:
    tuned, _ = finetune(encoder, {"sentiment": task_data["train"]}, lora_config(merge=True, epochs=8))
    assert type(tuned.model.encoder) is BertModel
    assert not any("lora" in n for n, _ in tuned.model.named_parameters())
    assert accuracy(tuned, task_data["heldout"]) >= 0.85


def test_default_targets_per_architecture(encoder, causal_lm) -> None:
    assert default_targets(encoder.model.encoder) == ["query", "key", "value", "dense"]
    assert default_targets(causal_lm.model) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(ModelError, match="no default LoRA target modules.*set lora.target_modules"):
        default_targets(torch.nn.Linear(2, 2))


def test_unknown_target_modules_are_reported(encoder, task_data) -> None:
    config = FinetuneConfig(mode="lora", lora=LoraSettings(target_modules=["nope"]), train=quick(epochs=1))
    with pytest.raises(ModelError, match="cannot add LoRA to BertModel.*check lora.target_modules"):
        finetune(encoder, {"sentiment": task_data["train"]}, config)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "lora", "lora": {"r": 0}}, "lora.r: Input should be greater than or equal to 1"),
        ({"mode": "lora", "lora": {"target_modules": []}}, "target_modules must list module names"),
        ({"mode": "lora", "lora": {"dropout": 1.0}}, "lora.dropout: Input should be less than 1"),
        ({"lora": {"r": 16}}, "lora settings are given but mode is 'full'"),
        ({"mode": "adapter"}, "mode: Input should be 'full' or 'lora'"),
    ],
)
def test_finetune_config_errors(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(FinetuneConfig, data)


def test_finetune_config_round_trips() -> None:
    config = FinetuneConfig()
    assert FinetuneConfig(**config.model_dump()) == config
    assert config.lora.merge and config.lora.r == 8 and config.lora.alpha == 16


def test_bad_training_data(encoder, task_data) -> None:
    texts, labels = task_data["train"]
    config = FinetuneConfig(train=quick(epochs=1))
    with pytest.raises(ModelError, match="train task 'topic' has no head"):
        finetune(encoder, {"topic": (texts, labels)}, config)
    with pytest.raises(DomainError, match=r"labels \[-1\] are outside 0..1; fine-tuning needs labeled texts"):
        finetune(encoder, {"sentiment": (texts, [-1] + labels[1:])}, config)
    with pytest.raises(DomainError, match="64 texts but 2 labels"):
        finetune(encoder, {"sentiment": (texts, labels[:2])}, config)
    with pytest.raises(DomainError, match="train has no tasks"):
        finetune(encoder, {}, config)
    assert encoder.labels == {"sentiment": LABELS}


def test_refuses_a_second_adapter(encoder, task_data) -> None:
    finetune(encoder, {"sentiment": task_data["train"]}, lora_config(merge=False, epochs=1))
    with pytest.raises(ModelError, match="already carries a LoRA adapter; merge it"):
        finetune(encoder, {"sentiment": task_data["train"]}, lora_config(merge=False, epochs=1))
    merge_lora(encoder)
    with pytest.raises(ModelError, match="no LoRA adapter to merge"):
        merge_lora(encoder)
