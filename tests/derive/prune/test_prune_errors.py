"""Bad settings give errors that say what to set."""

from __future__ import annotations

import pytest
from prune_helpers import TEXTS
from pydantic import ValidationError

from fanbu.config import validate
from fanbu.derive.prune import (
    Calibration,
    PruneConfig,
    PruneError,
    prune_causal_lm,
    prune_encoder,
    unit_importance,
)
from fanbu.derive.prune.importance import layout_of
from fanbu.errors import ConfigError


def test_llama_heads_must_be_whole_kv_groups(causal_lm) -> None:
    with pytest.raises(PruneError, match=r"heads=3 is not a multiple of the KV group size 2 .*one of 2, 4"):
        prune_causal_lm(causal_lm, PruneConfig(heads=3))


def test_bert_hidden_must_equal_heads_times_head_dim(encoder) -> None:
    with pytest.raises(
        PruneError, match=r"heads 2 x head_dim 8 = 16, but hidden = 32 \(hidden unset.*set hidden: 16"
    ):
        prune_encoder(encoder, PruneConfig(heads=2))
    with pytest.raises(PruneError, match=r"heads 4 x head_dim 8 = 32, but hidden = 16; set hidden: 32"):
        prune_encoder(encoder, PruneConfig(hidden=16))


def test_vocab_on_a_causal_lm_is_refused(causal_lm) -> None:
    with pytest.raises(PruneError, match="vocab trimming is not supported for causal LMs.*leave vocab unset"):
        prune_causal_lm(causal_lm, PruneConfig(vocab=100), Calibration(TEXTS))


def test_head_dim_on_llama_is_refused(causal_lm) -> None:
    with pytest.raises(
        PruneError, match="head_dim: pruning channels inside heads is not supported for Llama"
    ):
        prune_causal_lm(causal_lm, PruneConfig(head_dim=4))


def test_llama_hidden_must_divide_by_heads(causal_lm) -> None:
    with pytest.raises(PruneError, match=r"hidden=18 is not a multiple of the 4 heads kept.*e\.g\. 16"):
        prune_causal_lm(causal_lm, PruneConfig(hidden=18))


@pytest.mark.parametrize("importance", ["taylor", "activation"])
def test_data_driven_importance_needs_calibration(encoder, causal_lm, importance) -> None:
    message = f"importance: {importance} needs calibration data: pass calibration=Calibration"
    with pytest.raises(PruneError, match=message):
        prune_encoder(encoder, PruneConfig(ffn=32, importance=importance))
    with pytest.raises(PruneError, match=message):
        prune_causal_lm(causal_lm, PruneConfig(ffn=32, importance=importance))
    with pytest.raises(PruneError, match=message):
        unit_importance(causal_lm, importance)


def test_taylor_on_an_encoder_needs_labels_and_a_known_head(encoder) -> None:
    with pytest.raises(
        PruneError, match=r"taylor on an encoder needs the task loss: give Calibration\(labels"
    ):
        prune_encoder(encoder, PruneConfig(ffn=32, importance="taylor"), Calibration(TEXTS))
    with pytest.raises(PruneError, match="Calibration.head='nope' is not a head of the model .heads: topic"):
        prune_encoder(
            encoder, PruneConfig(ffn=32, importance="taylor"), Calibration(TEXTS, [0] * 8, head="nope")
        )
    with pytest.raises(
        PruneError, match=r"Calibration.labels: \[7\] out of range for head 'topic' \(3 labels\)"
    ):
        prune_encoder(encoder, PruneConfig(ffn=32, importance="taylor"), Calibration(TEXTS, [7] + [0] * 7))


def test_sizes_beyond_the_model_are_explained(encoder, causal_lm) -> None:
    with pytest.raises(PruneError, match="layers=3: the model has 2 layers; set layers <= 2"):
        prune_encoder(encoder, PruneConfig(layers=3))
    with pytest.raises(PruneError, match=r"layers=\[0, 5\]: indices run 0..1 for this 2-layer model"):
        prune_causal_lm(causal_lm, PruneConfig(layers=[0, 5]))
    with pytest.raises(
        PruneError, match="heads=8: the model has 4 attention heads per layer; set heads <= 4"
    ):
        prune_causal_lm(causal_lm, PruneConfig(heads=8))
    with pytest.raises(PruneError, match="ffn=100: the model has 64 FFN neurons per layer; set ffn <= 64"):
        prune_encoder(encoder, PruneConfig(ffn=100))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 3}, "steps=3 needs schedule: iterative"),
        ({"ffn": 1.5}, r"ffn=1.5: a float is a fraction kept, in \(0, 1\]"),
        ({"ffn": 0}, "ffn=0: keep at least 1 neuron"),
        ({"layers": [1, 1]}, r"layers=\[1, 1\]: indices must be distinct and >= 0"),
        ({"layers": 0}, "layers=0: keep at least 1 layer"),
        ({"layers": []}, r"layers=\[\]: list at least one layer index"),
        ({"heads": 0}, "greater than or equal to 1"),
        ({"importance": "random"}, "'taylor', 'activation' or 'minitron'"),
    ],
)
def test_config_validation(settings, message) -> None:
    with pytest.raises(ValidationError, match=message):
        PruneConfig(**settings)


def test_recipe_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="prune.yaml: schedul: unknown key"):
        validate(PruneConfig, {"schedul": "iterative"}, source="prune.yaml")


def test_calibration_validation() -> None:
    with pytest.raises(ConfigError, match="2 labels for 3 texts; give one per text"):
        Calibration(["a", "b", "c"], labels=[0, 1])
    with pytest.raises(ConfigError, match="give a non-empty list of texts"):
        Calibration("just one string")
    with pytest.raises(ConfigError, match=r"batch_size \(0\) and max_batches \(8\) must be >= 1"):
        Calibration(["a"], batch_size=0)


def test_unsupported_handles_are_refused() -> None:
    from fanbu.models import ModuleHandle

    with pytest.raises(
        PruneError, match="cannot prune a ModuleHandle; pass an EncoderHandle or a CausalLMHandle"
    ):
        unit_importance(ModuleHandle.__new__(ModuleHandle))


def test_parameters_outside_the_layout_are_refused(causal_lm) -> None:
    layout = layout_of(causal_lm)
    with pytest.raises(
        PruneError, match="'model.layers.0.block_sparse_moe.gate.weight' is not part of a Llama"
    ):
        layout.axes("model.layers.0.block_sparse_moe.gate.weight")
