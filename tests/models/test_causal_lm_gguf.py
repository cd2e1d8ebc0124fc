"""GGUF export of a tiny Llama with a BPE vocabulary: read back by transformers, same logits (f32)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fanbu.errors import ModelError
from fanbu.models import CausalLMHandle
from fanbu.models.lm_gguf import export_gguf, gguf_parity

TEXTS = ["the team will play a great game on the first day", "a new school opened in the city this week"] * 4


@pytest.fixture
def bpe_lm() -> CausalLMHandle:
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.train_from_iterator(
        TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    return CausalLMHandle(LlamaForCausalLM(config).eval(), tokenizer, max_length=64)


def test_f32_gguf_reads_back_with_the_same_logits(bpe_lm, tmp_path) -> None:
    path = export_gguf(bpe_lm, tmp_path / "lm.gguf", dtype="f32")
    parity = gguf_parity(bpe_lm, path, TEXTS, TEXTS[:2], tolerance=1e-4)
    assert parity.passed and parity.greedy_agreement == 1.0, parity.as_dict()


def test_q8_gguf_is_within_tolerance_and_wordpiece_is_refused(bpe_lm, tmp_path) -> None:
    path = export_gguf(bpe_lm, tmp_path / "lm.q8.gguf", dtype="q8_0")
    assert path.stat().st_size > 0
    assert gguf_parity(bpe_lm, path, TEXTS, TEXTS[:2], tolerance=0.05).passed
    with pytest.raises(ModelError, match="BPE"):
        export_gguf(CausalLMHandle.tiny(), tmp_path / "tiny.gguf")
