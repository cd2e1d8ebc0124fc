"""Perplexity of tiny causal LMs against NLL computed by hand, padding and windowing invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fanbu.evaluate import EvaluationError, perplexity

VOCAB = 100
TEXTS = [
    "w3 w7 w9 w11 w2",
    "w5 w5 w60 w42 w17 w88 w3 w4 w90",
    "",
    "w10 w20",
    "w1 w2 w3",
    "w99",
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1} | {f"w{i}": i for i in range(2, VOCAB)}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def window_nll(model: nn.Module, ids: list[int], score_from: int) -> tuple[float, int]:
    """Sum NLL of ``ids[t]`` for ``t >= max(score_from, 1)`` given ``ids[:t]``, one unpadded pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]  # (seq, vocab)
    logp = F.log_softmax(logits.double(), dim=-1)  # (seq, vocab)
    nll, count = 0.0, 0
    for t in range(max(score_from, 1), len(ids)):
        nll -= float(logp[t - 1, ids[t]])
        count += 1
    return nll, count


def token_ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def test_equals_exp_mean_nll_by_hand(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    total, count = 0.0, 0
    for text in TEXTS:
        if text:
            nll, n = window_nll(model, token_ids(tokenizer, text), 0)
            total, count = total + nll, count + n
    assert count == 4 + 8 + 1 + 2  # the one-token text has nothing to predict
    expected = math.exp(total / count)
    assert perplexity(model, tokenizer, TEXTS, batch_size=1) == pytest.approx(expected, rel=1e-5)


def test_padding_does_not_change_value(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    one = perplexity(model, tokenizer, TEXTS, batch_size=1)
    four = perplexity(model, tokenizer, TEXTS, batch_size=4)
    assert four == pytest.approx(one, rel=1e-5)


def test_long_texts_cut_into_windows(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    ids = token_ids(tokenizer, TEXTS[1])  # 9 tokens
    # max_length 4, no overlap: [0:4] [4:8] [8:9]; each window predicts from its own start.
    parts = [window_nll(model, ids[a:b], 0) for a, b in ((0, 4), (4, 8), (8, 9))]
    expected = math.exp(sum(p[0] for p in parts) / sum(p[1] for p in parts))
    got = perplexity(model, tokenizer, [TEXTS[1]], batch_size=2, max_length=4)
    assert got == pytest.approx(expected, rel=1e-5)


def test_overlapping_windows_score_each_token_once(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    ids = token_ids(tokenizer, TEXTS[1])  # 9 tokens
    # max_length 4, stride 2: [0:4] scores 1-3, [2:6] scores 4-5, [4:8] scores 6-7, [6:9] scores 8.
    spans = ((0, 4, 0), (2, 6, 2), (4, 8, 2), (6, 9, 2))
    parts = [window_nll(model, ids[a:b], s) for a, b, s in spans]
    assert sum(p[1] for p in parts) == len(ids) - 1
    expected = math.exp(sum(p[0] for p in parts) / sum(p[1] for p in parts))
    got = perplexity(model, tokenizer, [TEXTS[1]], batch_size=3, max_length=4, stride=2)
    assert got == pytest.approx(expected, rel=1e-5)


def test_window_longer_than_text_equals_full(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    full = perplexity(model, tokenizer, TEXTS, max_length=256)
    assert perplexity(model, tokenizer, TEXTS, max_length=9, stride=3) == pytest.approx(full, rel=1e-5)


class UniformLM(nn.Module):
    """Equal logits over the vocabulary: perplexity must be the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.calls = 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(*input_ids.shape, self.vocab)  # (batch, seq, vocab)


def test_uniform_logits_give_vocab_size(tokenizer: PreTrainedTokenizerFast) -> None:
    lm = UniformLM(VOCAB)
    assert perplexity(lm, tokenizer, TEXTS, batch_size=2) == pytest.approx(VOCAB, rel=1e-6)
    assert lm.calls == 2  # four windows with a token to predict (one-token text dropped), two per batch


def test_train_mode_restored(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    model.train()
    model.model.layers[0].eval()
    try:
        perplexity(model, tokenizer, TEXTS[:2])
        assert model.training
        assert model.model.layers[1].training
        assert not model.model.layers[0].training
    finally:
        model.eval()
    perplexity(model, tokenizer, TEXTS[:2])
    assert not model.training


def test_no_tokens_message(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="no tokens to score"):
        perplexity(model, tokenizer, ["", "   "])
    with pytest.raises(EvaluationError, match="no tokens to score"):
        perplexity(model, tokenizer, ["w5"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"max_length": 1}, "max_length must be >= 2 to predict a next token, got 1"),
        ({"max_length": 4, "stride": 5}, r"stride must be in \[1, max_length=4\], got 5"),
        ({"stride": 0}, r"stride must be in \[1, max_length=256\], got 0"),
    ],
)
def test_bad_sizes_messages(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(EvaluationError, match=message):
        perplexity(model, tokenizer, TEXTS, **kwargs)


class NotAnLM(nn.Module):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids.float().mean(dim=1)  # (batch,)


def test_non_lm_output_message(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(EvaluationError, match=r"logits of shape \(batch, seq, vocab\).*Tensor"):
        perplexity(NotAnLM(), tokenizer, TEXTS)
