"""Each importance (magnitude, Taylor, activation) ranks planted units: scaled up kept, zeroed dropped."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import (
    TEXTS,
    scale_bert_head,
    scale_bert_neuron,
    scale_llama_group,
    scale_llama_neuron,
    zero_hidden_channel,
)
from transformers import AutoModelForCausalLM

from fanbu.derive.prune import Calibration, PruneConfig, PruneError, prune_causal_lm, unit_importance

METHODS = ["magnitude", "taylor", "activation"]


@pytest.mark.parametrize("method", METHODS)
def test_encoder_heads_and_neurons(encoder, calibration, method) -> None:
    scale_bert_head(encoder.model, 0, 1, 0.0, head_dim=8)
    scale_bert_head(encoder.model, 0, 2, 4.0, head_dim=8)
    scale_bert_neuron(encoder.model, 1, 10, 0.0)
    scale_bert_neuron(encoder.model, 1, 20, 6.0)
    scores = unit_importance(encoder, method, calibration)
    assert scores.method == method
    assert [h.shape for h in scores.heads] == [(4,), (4,)]
    assert scores.heads[0].argmin() == 1 and scores.heads[0][1] == 0
    assert scores.heads[0].argmax() == 2
    assert scores.ffn[1].argmin() == 10 and scores.ffn[1].argmax() == 20
    assert scores.qk_channels[0].shape == scores.vo_channels[0].shape == (4, 8)


@pytest.mark.parametrize("method", METHODS)
def test_encoder_hidden_channel_and_head_channel(encoder, calibration, method) -> None:
    zero_hidden_channel(encoder.model, 5)
    with torch.no_grad():
        query = encoder.model.encoder.encoder.layer[1].attention.self.query
        key = encoder.model.encoder.encoder.layer[1].attention.self.key
        for linear in (query, key):  # channel 3 of head 2 (flat 19) is dead in query and key
            linear.weight[19] = 0
            linear.bias[19] = 0
    scores = unit_importance(encoder, method, calibration)
    assert scores.hidden().shape == (32,)
    assert scores.hidden().argmin() == 5
    assert scores.hidden([0]).argmin() == 5
    assert scores.qk_channels[1][2].argmin() == 3


@pytest.mark.parametrize("method", ["magnitude", "taylor"])
def test_encoder_layer_scores(encoder, calibration, method) -> None:
    with torch.no_grad():
        for param in encoder.model.encoder.encoder.layer[1].parameters():
            param.mul_(3.0)
    scores = unit_importance(encoder, method, calibration)
    assert scores.layers.shape == (2,)
    assert scores.layers.argmax() == 1


@pytest.mark.parametrize("method", [*METHODS, "minitron"])
def test_llama_groups_neurons_and_layers(causal_lm, method) -> None:
    model = causal_lm.model
    scale_llama_group(model, 0, 0, 0.0)
    scale_llama_group(model, 1, 1, 0.0)
    scale_llama_neuron(model, 1, 7, 0.0)
    scale_llama_neuron(model, 1, 9, 5.0)
    with torch.no_grad():  # layer 0 becomes the identity: its residual branches write zeros
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        for param in model.model.layers[1].parameters():
            param.mul_(2.0)
    scores = unit_importance(causal_lm, method, Calibration(texts=TEXTS, batch_size=4))
    assert [g.shape for g in scores.heads] == [(2,), (2,)]
    assert scores.heads[0].argmin() == 0 and scores.heads[1].argmin() == 1
    assert scores.ffn[1].argmin() == 7 and scores.ffn[1].argmax() == 9
    assert scores.layers.argmin() == 0
    assert scores.qk_channels == []


@pytest.mark.parametrize("method", [*METHODS, "minitron"])
def test_pruning_keeps_the_scaled_up_group(causal_lm, method) -> None:
    scale_llama_group(causal_lm.model, 0, 1, 5.0)
    calibration = Calibration(texts=TEXTS, batch_size=4)
    pruned = prune_causal_lm(causal_lm, PruneConfig(heads=2, importance=method), calibration)
    old = causal_lm.model.model.layers[0].self_attn
    new = pruned.model.model.layers[0].self_attn
    assert torch.equal(new.k_proj.weight, old.k_proj.weight[8:16])
    assert torch.equal(new.q_proj.weight, old.q_proj.weight[16:32])
    assert torch.equal(new.o_proj.weight, old.o_proj.weight[:, 16:32])


def test_minitron_scores_a_dead_hidden_channel_lowest_and_refuses_encoders(causal_lm, encoder) -> None:
    with torch.no_grad():  # channel 5 is dead: every RMSNorm zeroes it
        for name, param in causal_lm.model.named_parameters():
            if name.endswith("norm.weight"):
                param[5] = 0
    scores = unit_importance(causal_lm, "minitron", Calibration(texts=TEXTS, batch_size=4))
    assert scores.hidden().shape == (32,) and scores.hidden().argmin() == 5
    assert scores.layers.shape == (2,) and bool((scores.layers >= 0).all())
    with pytest.raises(PruneError, match="minitron"):
        unit_importance(encoder, "minitron", Calibration(texts=TEXTS, batch_size=4))


def test_minitron_width_and_depth_prune_reloads_and_generates(causal_lm, tmp_path) -> None:
    config = PruneConfig(layers=1, heads=2, ffn=0.5, hidden=16, importance="minitron")
    pruned = prune_causal_lm(causal_lm, config, Calibration(texts=TEXTS, batch_size=4))
    model = pruned.model
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (1, 16)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = pruned.tokenize(["alpha beta"])["input_ids"]
    out = reloaded.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, ids.shape[1] + 4)
    assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)
