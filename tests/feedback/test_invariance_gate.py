"""The gate's counterfactual score: a model that follows a planted word loses accuracy there."""

from __future__ import annotations

import pytest

from fanbu.errors import ConfigError
from fanbu.feedback.gate.counterfactual import counterfactual_scores, counterfactual_set


def test_counterfactual_set_keeps_labels_and_plants_words():
    splits = {"tech": (["a b", "c d", "e f"], [0, 1, 2])}
    planted = counterfactual_set(splits, ["zqxv"], rate=1.0, seed=0)
    assert planted["tech"][1] == [0, 1, 2]
    assert all("zqxv" in t.split() for t in planted["tech"][0])
    with pytest.raises(ConfigError, match="at least one word"):
        counterfactual_set(splits, [], rate=1.0, seed=0)


def test_counterfactual_scores_report_a_drop_per_task(large_v0, experts, toy_data):
    clean = {"tech": toy_data["test"]["tech"]}
    planted = counterfactual_set(clean, ["software", "program"], rate=1.0, seed=0)  # a class's words
    result = counterfactual_scores(experts["tech"], large_v0, clean, planted)
    tech = result["candidate"]["tasks"]["tech"]
    assert tech["drop"] == pytest.approx(100 * (tech["accuracy"] - tech["counterfactual_accuracy"]))
    assert tech["drop"] > 0  # planting a class's signal words into every text misleads the expert
    assert set(result) == {"candidate", "champion"}
