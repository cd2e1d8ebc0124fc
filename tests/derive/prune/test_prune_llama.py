"""Llama pruning: whole KV groups, tied embeddings, renumbered layers, exact surgery, plain reload."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import TEXTS, llama_params, scale_llama_group, scale_llama_neuron
from transformers import AutoModelForCausalLM

from fanbu.derive.prune import Calibration, PruneConfig, count_parameters, prune_causal_lm
from fanbu.models import CausalLMHandle, Provenance

V = 592


def lm_logits(handle: CausalLMHandle) -> torch.Tensor:
    handle.model.eval()
    with torch.no_grad():
        return handle.model(**handle.tokenize(TEXTS)).logits  # (batch, seq, vocab)


def test_formula_matches_the_tiny_llama(causal_lm) -> None:
    assert count_parameters(causal_lm) == llama_params(V, 32, 2, 4, 2, 8, 64)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"layers": 1}, llama_params(V, 32, 1, 4, 2, 8, 64)),
        ({"heads": 2}, llama_params(V, 32, 2, 2, 1, 8, 64)),
        ({"ffn": 0.5}, llama_params(V, 32, 2, 4, 2, 8, 32)),
        ({"hidden": 16}, llama_params(V, 16, 2, 4, 2, 8, 64)),
        ({"layers": 1, "heads": 2, "ffn": 16, "hidden": 24}, llama_params(V, 24, 1, 2, 1, 8, 16)),
    ],
)
def test_each_unit_shrinks_as_expected(causal_lm, settings, expected) -> None:
    pruned = prune_causal_lm(causal_lm, PruneConfig(**settings))
    assert count_parameters(pruned) == expected
    config = pruned.model.config
    assert config.num_attention_heads % config.num_key_value_heads == 0
    assert config.head_dim == 8
    assert lm_logits(pruned).shape[-1] == V


def test_keeping_everything_gives_the_same_outputs(causal_lm) -> None:
    reference = lm_logits(causal_lm)
    full = PruneConfig(layers=2, heads=4, ffn=64, hidden=32, importance="activation")
    pruned = prune_causal_lm(causal_lm, full, Calibration(texts=TEXTS))
    torch.testing.assert_close(lm_logits(pruned), reference)


def test_dropping_dead_groups_and_neurons_changes_nothing(causal_lm) -> None:
    scale_llama_group(causal_lm.model, 0, 1, 0.0)
    scale_llama_group(causal_lm.model, 1, 0, 0.0)
    for neuron in (2, 30, 31):
        scale_llama_neuron(causal_lm.model, 0, neuron, 0.0)
        scale_llama_neuron(causal_lm.model, 1, neuron, 0.0)
    reference = lm_logits(causal_lm)
    pruned = prune_causal_lm(causal_lm, PruneConfig(heads=2, ffn=61))
    assert (pruned.model.config.num_attention_heads, pruned.model.config.num_key_value_heads) == (2, 1)
    torch.testing.assert_close(lm_logits(pruned), reference)


def test_tied_embeddings_stay_tied_and_generation_uses_the_cache(causal_lm) -> None:
    pruned = prune_causal_lm(causal_lm, PruneConfig(layers=[1], heads=2, hidden=16, ffn=0.5))
    model = pruned.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0]
    batch = pruned.tokenize(["the team won"])
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=True)
        plain = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 6
    assert torch.equal(out, plain)


def test_three_layers_to_two_renumbers_layer_idx() -> None:
    handle = CausalLMHandle.tiny(num_layers=3, seed=5)
    pruned = prune_causal_lm(handle, PruneConfig(layers=[0, 2]))
    assert [layer.self_attn.layer_idx for layer in pruned.model.model.layers] == [0, 1]
    batch = pruned.tokenize(["hello there"])
    with torch.no_grad():
        cached = pruned.model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        uncached = pruned.model.generate(
            **batch, max_new_tokens=4, min_new_tokens=4, do_sample=False, use_cache=False
        )
    assert torch.equal(cached, uncached)
    old, new = (
        handle.model.model.layers[2].mlp.up_proj.weight,
        pruned.model.model.layers[1].mlp.up_proj.weight,
    )
    assert torch.equal(old, new)


def test_pruned_llama_reloads_with_plain_auto_model(causal_lm, tmp_path) -> None:
    pruned = prune_causal_lm(
        causal_lm, PruneConfig(layers=1, heads=2, hidden=24, ffn=32, importance="taylor"), Calibration(TEXTS)
    )
    pruned.save(tmp_path / "lm", Provenance(name="pruned-lm"))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    assert plain.config.num_key_value_heads == 1 and plain.config.hidden_size == 24
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
    batch = pruned.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, lm_logits(pruned))
    torch.testing.assert_close(lm_logits(CausalLMHandle.load(tmp_path / "lm")), lm_logits(pruned))
