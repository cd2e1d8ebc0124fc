"""The packaged MiniLM pruned to a ~13% student on real newsgroup texts, reloaded without fanbu."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from fanbu.data import default_benchmark
from fanbu.derive.prune import Calibration, PruneConfig, count_parameters, prune_encoder
from fanbu.models import EncoderHandle, Provenance

pytestmark = pytest.mark.integration


def test_minilm_prunes_to_under_15_percent_and_reloads(tmp_path) -> None:
    teacher = EncoderHandle.from_source("package:all-MiniLM-L6-v2", max_length=64)
    texts = list(default_benchmark().domains[0].train.texts[:300])
    config = PruneConfig(layers=2, heads=8, head_dim=32, hidden=256, ffn=0.5, vocab=6000)
    student = prune_encoder(teacher, config, Calibration(texts))
    original, pruned = count_parameters(teacher), count_parameters(student)
    print(f"MiniLM parameters: {original} -> {pruned} ({pruned / original:.3%})")
    assert original == 22_713_216
    assert pruned <= 0.15 * original
    config_out = student.model.encoder.config
    assert (config_out.num_hidden_layers, config_out.num_attention_heads, config_out.hidden_size) == (
        2,
        8,
        256,
    )
    assert (config_out.intermediate_size, config_out.vocab_size, len(student.tokenizer)) == (768, 6000, 6000)

    student.save(tmp_path / "student", Provenance(base_model="all-MiniLM-L6-v2"))
    plain = AutoModel.from_pretrained(tmp_path / "student").eval()
    student.model.eval()
    batch = student.tokenize(texts[:4])
    assert (batch["input_ids"] == student.tokenizer.unk_token_id).float().mean() < 0.01
    with torch.no_grad():
        expected = student.model.encoder(**batch).last_hidden_state  # (4, seq, 256)
        torch.testing.assert_close(plain(**batch).last_hidden_state, expected)
