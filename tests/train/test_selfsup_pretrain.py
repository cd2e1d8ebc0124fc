"""Self-supervised continued pretraining on tiny encoders: both objectives learn, heads are left alone,
a rerun is bit for bit the same, bad pools get clear errors, and the derive stage / feedback option run."""

from __future__ import annotations

import random

import pytest
import torch

from fanbu.errors import DomainError
from fanbu.models import EncoderHandle
from fanbu.train.selfsup import SSLConfig, continue_pretraining, pool_texts
from fanbu.train.selfsup.pretrain import MaskedLMHead

_WORDS = [
    "orbit",
    "rocket",
    "nasa",
    "launch",
    "moon",
    "doctor",
    "patient",
    "disease",
    "drug",
    "clinic",
    "game",
    "team",
    "score",
    "vote",
    "law",
]
_RNG = random.Random(0)
TEXTS = [" ".join(_RNG.sample(_WORDS, 6)) for _ in range(48)]


def _handle(seed: int = 0) -> EncoderHandle:
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=seed)
    handle.add_head("sci", ["a", "b"], seed=0)
    return handle


def _weights(handle: EncoderHandle) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in handle.model.state_dict().items()}


@pytest.mark.parametrize("objective", ["mlm", "simcse"])
def test_pretraining_learns_its_pretext_task_and_leaves_the_heads(objective):
    handle = _handle()
    before = _weights(handle)
    config = SSLConfig(objective=objective, steps=60, batch_size=8, lr=2e-3, head_warmup=0.25)
    result = continue_pretraining(handle, TEXTS, config, seed=0)
    after = _weights(handle)
    assert result.steps == 60 and result.texts == len(set(TEXTS))
    assert result.last_loss < result.first_loss, result.summary()
    encoder = [k for k in before if k.startswith("encoder.") and before[k].is_floating_point()]
    assert sum(not torch.equal(before[k], after[k]) for k in encoder) > len(encoder) // 2
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads."))
    assert set(after) == set(before)  # the MLM head is not left on the model


def test_a_rerun_with_the_same_seed_is_identical_and_another_seed_is_not():
    config = SSLConfig(objective="mlm", steps=12, batch_size=8)
    runs = []
    for seed in (3, 3, 4):
        handle = _handle()
        continue_pretraining(handle, TEXTS, config, seed=seed)
        runs.append(_weights(handle))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_the_mlm_head_is_tied_to_the_input_embeddings_and_owns_no_copy():
    handle = _handle()
    embeddings = handle.model.encoder.get_input_embeddings()
    head = MaskedLMHead(embeddings, 32)
    assert all(p is not embeddings.weight for p in head.parameters())
    logits = head(torch.zeros(3, 32))
    assert logits.shape == (3, embeddings.weight.shape[0])
    logits.sum().backward()
    assert embeddings.weight.grad is not None  # the decoder is the embedding matrix itself


def test_the_pool_drops_blanks_and_duplicates_and_an_empty_pool_names_the_setting():
    assert pool_texts(["a", " ", "a", "b", ""], None, 0, "x") == ["a", "b"]
    assert len(pool_texts([str(i) for i in range(10)], 4, 0, "x")) == 4
    with pytest.raises(DomainError, match="stage ssl: the unlabeled pool is empty"):
        continue_pretraining(_handle(), ["", "  "], SSLConfig(steps=2), setting="stage ssl")


def test_mlm_on_a_tokenizer_without_a_mask_token_says_to_use_simcse():
    handle = _handle()
    handle.tokenizer.mask_token = None
    with pytest.raises(DomainError, match="objective: simcse"):
        continue_pretraining(handle, TEXTS, SSLConfig(objective="mlm", steps=2))


def test_the_settings_refuse_what_cannot_run():
    with pytest.raises(ValueError):
        SSLConfig(batch_size=1)  # SimCSE needs in-batch negatives
    with pytest.raises(ValueError):
        SSLConfig(mask_rate=0.0)
