"""Search settings: defaults, and bad values rejected with a message saying what to set."""

from __future__ import annotations

import pytest

from fanbu.config import validate
from fanbu.derive.search import Budget, SearchConfig, SearchSpace
from fanbu.errors import ConfigError


def test_defaults_and_choices() -> None:
    config = validate(SearchConfig, {"budget": {"max_param_ratio": 0.15}})
    assert config.trials == 12 and config.seed == 0 and config.timeout_s is None
    assert config.budget == Budget(max_param_ratio=0.15)
    assert config.space.choices() == {
        "layers": [1, 2, 3],
        "heads": [4, 6, 8, 12],
        "ffn": [0.25, 0.5, 1.0],
        "vocab": [4000, 8000, 16000],
    }
    with_dims = SearchSpace(head_dim=[16, 32], vocab=[None])
    assert list(with_dims.choices()) == ["layers", "heads", "head_dim", "ffn", "vocab"]
    assert with_dims.choices()["vocab"] == [None]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"budget": {}}, "set at least one of max_params, max_param_ratio or max_latency_ms"),
        ({}, "budget: Field required"),
        ({"budget": {"max_params": 0}}, "budget.max_params: Input should be greater than 0"),
        ({"budget": {"max_latency_ms": -1}}, "budget.max_latency_ms: Input should be greater than 0"),
        ({"budget": {"max_params": 10}, "trials": 0}, "trials: Input should be greater than or equal to 1"),
        ({"budget": {"max_params": 10}, "space": {"layers": []}}, "space.layers needs at least one choice"),
        ({"budget": {"max_params": 10}, "space": {"layers": [0, 1]}}, "space.layers: choice 0 out of range"),
        (
            {"budget": {"max_params": 10}, "space": {"heads": [4, 4]}},
            r"space.heads repeats a choice: \[4, 4\]",
        ),
        ({"budget": {"max_params": 10}, "space": {"ffn": [0.0]}}, "space.ffn: 0.0 keeps no FFN neuron"),
        (
            {"budget": {"max_params": 10}, "space": {"ffn": [1.5]}},
            r"choice 1.5 out of range; each must be in \(0.0, 1.0\]",
        ),
        ({"budget": {"max_params": 10}, "space": {"vocab": [0]}}, "space.vocab: choice 0 out of range"),
        ({"budget": {"max_params": 10}, "space": {"depth": [1]}}, "space.depth: unknown key"),
    ],
)
def test_bad_settings_are_explained(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(SearchConfig, data, source="search")
