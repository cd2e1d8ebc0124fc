"""Every registered adaptation method through the one loop, on toy features, with equal steps."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fanbu.errors import DomainError
from fanbu.unlabeled.adapt import adapt, score
from fanbu.unlabeled.methods import METHODS, AdaptConfig
from tests.unlabeled.helpers import toy_encode

SOURCE = [f"{w} train text {i}" for w in ("pixel", "puck") for i in range(16)]
LABELS = torch.tensor([0] * 16 + [1] * 16)
VALIDATION = [f"{w} validation text {i}" for w in ("window", "puck") for i in range(4)]
POOL = [f"{w} pool text {i}" for w in ("chip", "goal") for i in range(12)]
TEST = [f"{w} test text {i}" for w in ("chip", "goal") for i in range(6)]


def small(method: str, **changes) -> AdaptConfig:
    return AdaptConfig.model_validate({"method": method, "steps": 12, "batch_size": 8, "target_batch_size": 8,
                                       "hidden": 8, "dann_hidden": 8, "lr": 1e-2, **changes})


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_its_steps_and_scores(method):
    torch.set_num_threads(1)
    result = adapt(small(method), (toy_encode(SOURCE), LABELS), toy_encode(POOL),
                   (toy_encode(VALIDATION), torch.tensor([0] * 4 + [1] * 4)), num_labels=2)
    assert result.steps == 12 and result.pool == len(POOL)
    assert result.history and "score" in result.history[-1]  # source validation, logged per epoch
    scored = score(result.model, (toy_encode(TEST), torch.tensor([0] * 6 + [1] * 6)), ("tech", "sports"))
    assert 0.0 <= scored["acc"] <= 1.0 and set(scored["f1"]) == {"tech", "sports"}
    if METHODS[method].has("pseudo_labels"):
        assert result.pseudo_labelled is not None and 0 <= result.pseudo_labelled <= len(POOL)


def test_every_method_is_registered_with_a_reference():
    assert METHODS.names() == ["source_only", "dann", "coral", "mmd", "self_training"]
    assert all(entry.reference.startswith("https://") for entry in METHODS.values())


def test_an_empty_pool_is_an_error_naming_the_setting():
    with pytest.raises(DomainError, match="unlabeled pool is empty.*shift.target"):
        adapt(small("dann"), (toy_encode(SOURCE), LABELS), torch.zeros(0, 8),
              (toy_encode(VALIDATION), torch.tensor([0] * 4 + [1] * 4)), num_labels=2)


def test_settings_are_checked_across_fields():
    with pytest.raises(ValidationError, match="at least one step in each phase"):
        small("self_training", steps=2, warmup_share=0.2)
    with pytest.raises(ValidationError, match=r"threshold 1.5 must lie in \[0, 1\]"):
        small("self_training", threshold=1.5)
    with pytest.raises(ValidationError, match="mmd_bandwidths must be positive"):
        small("mmd", mmd_bandwidths=(1.0, -2.0))
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        AdaptConfig.model_validate({"methd": "dann"})
