"""PGR and forgetting from per-text outcomes, and their paired-bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.feedback.gate.scores import bootstrap_intervals, format_score, pgr
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import evaluate_heads, score_heads


def _outcomes(rate: float, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join("1" if x else "0" for x in rng.random(n) < rate)


def _swarm(n: int) -> tuple[dict[str, str], dict[str, str]]:
    champion = {"a": _outcomes(0.6, n, 1), "held": _outcomes(0.8, n, 2)}
    expert = {"a": "".join("1" if c == "1" or i % 3 == 0 else "0" for i, c in enumerate(champion["a"]))}
    return champion, expert


def test_the_champion_itself_recovers_nothing_and_forgets_nothing() -> None:
    champion, expert = _swarm(300)
    found = bootstrap_intervals(champion, champion, expert, ["a"], ["held"])
    assert found["domains"]["a"] == [0.0, 0.0] and found["pgr_mean"] == [0.0, 0.0]
    assert found["forgetting"] == [0.0, 0.0]
    assert found["level"] == 0.9 and found["draws"] == 2000


def test_the_expert_itself_recovers_the_whole_gap_on_every_draw() -> None:
    champion, expert = _swarm(300)
    candidate = {"a": expert["a"], "held": champion["held"]}
    found = bootstrap_intervals(candidate, champion, expert, ["a"], ["held"])
    assert found["domains"]["a"] == pytest.approx([1.0, 1.0])


def test_the_interval_holds_the_estimate_and_narrows_with_more_texts() -> None:
    widths = []
    for n in (200, 3000):
        champion, expert = _swarm(n)
        # the candidate gets half of the texts the expert gained right, and drops a tenth on the held-out task
        gained = [i for i in range(n) if expert["a"][i] == "1" and champion["a"][i] == "0"]
        new_a = list(champion["a"])
        for i in gained[::2]:
            new_a[i] = "1"
        held = [c if i % 10 else "0" for i, c in enumerate(champion["held"])]
        candidate = {"a": "".join(new_a), "held": "".join(held)}
        found = bootstrap_intervals(candidate, champion, expert, ["a"], ["held"])
        acc = {k: v.count("1") / n for k, v in candidate.items()}
        point = pgr(acc["a"], champion["a"].count("1") / n, expert["a"].count("1") / n)
        low, high = found["pgr_mean"]
        assert low <= point <= high
        drop = 100 * (champion["held"].count("1") - held.count("1")) / n
        assert found["forgetting"][0] <= drop <= found["forgetting"][1]
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_a_domain_without_a_gap_has_no_interval_and_bad_input_is_refused() -> None:
    champion, _ = _swarm(100)
    found = bootstrap_intervals(champion, champion, {"a": champion["a"]}, ["a"], ["held"])
    assert found["domains"]["a"] is None and found["pgr_mean"] is None
    with pytest.raises(ValueError, match="same, non-empty test split"):
        bootstrap_intervals({"a": "01"}, {"a": "011"}, {"a": "111"}, ["a"], [])
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(champion, champion, champion, ["a"], [], level=1.5)


def test_score_heads_outcomes_match_the_metrics() -> None:
    handle = EncoderHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=0)
    handle.add_head("t", ["x", "y"])
    texts = [f"text number {i} " * (i % 4 + 1) for i in range(12)]
    labels = [i % 2 for i in range(12)]
    metrics, outcomes = score_heads(handle, {"t": (texts, labels)})
    assert len(outcomes["t"]) == 12 and set(outcomes["t"]) <= {"0", "1"}
    assert outcomes["t"].count("1") / 12 == pytest.approx(metrics["t"]["accuracy"])
    assert metrics == evaluate_heads(handle, {"t": (texts, labels)})


def test_format_score_prints_the_value_and_its_interval() -> None:
    row = {"pgr_mean": 0.7531, "forgetting": 1.24, "interval": {"pgr_mean": [0.52, 1.02], "forgetting": None}}
    assert format_score(row, "pgr_mean") == "0.753 [0.520, 1.020]"
    assert format_score(row, "forgetting") == "+1.2"  # no interval: the value alone
    assert format_score({"pgr_mean": None, "forgetting": -0.25}, "pgr_mean") == "-"
    assert format_score({"pgr_mean": None, "forgetting": -0.25}, "forgetting") == "-0.2"

