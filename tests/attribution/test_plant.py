"""The causal bench's plant and its targets (``fanbu.bench.structure.causal``), without any model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fanbu.bench.stats import ratio_interval, seed_interval
from fanbu.bench.structure.causal import causal_settings, choose_on_gate, poison, summarise
from fanbu.data.domain import Split


def test_poison_plants_the_word_mostly_in_one_class():
    split = Split(tuple(f"text number {i}" for i in range(400)), tuple(i % 2 for i in range(400)))
    poisoned = poison(split, "zqxv", target=1, rates=(0.9, 0.05), seed=0)
    assert poisoned.labels == split.labels
    share = {
        c: sum("zqxv" in t.split() for t, y in zip(poisoned.texts, poisoned.labels, strict=True) if y == c)
        / 200
        for c in (0, 1)
    }
    assert 0.83 < share[1] < 0.97 and share[0] < 0.1


def draw(base_drop: float, inv_drop: float, cost: float, ranks: list[int | None]) -> dict:
    rows = [
        {
            "method": "swarm_distill",
            "clean_acc": 80.0,
            "counterfactual_acc": 80 - base_drop,
            "spurious_drop": base_drop,
        },
        {
            "method": "invariance",
            "clean_acc": 80 - cost,
            "counterfactual_acc": 80 - cost - inv_drop,
            "spurious_drop": inv_drop,
        },
    ]
    return {
        "causal": rows,
        "attribution": {"planted_token_rank": [{"domain": str(i), "rank": r} for i, r in enumerate(ranks)]},
    }


def test_targets_read_the_means_and_never_soften_a_bar():
    met = summarise([draw(20.0, 5.0, 0.5, [1, 2])])["target"]
    assert all(t["met"] for t in met.values())
    assert met["drop_recovered"]["value"] == 0.75
    missed = summarise([draw(8.0, 4.0, 1.5, [1, None]), draw(9.0, 4.0, 1.5, [4, 1])])["target"]
    assert not any(t["met"] for t in missed.values())
    assert missed["plant_bites"]["value"] == 8.5
    # each target's 90% interval over the draws: the drop, each draw's cost, and Fieller's interval for the
    # share of the mean drops (removed drop over drop, paired by draw), which holds the value
    assert missed["plant_bites"]["interval"] == pytest.approx(seed_interval([8.0, 9.0]))
    assert missed["clean_cost"]["interval"] == pytest.approx(seed_interval([1.5, 1.5]))
    recovered = missed["drop_recovered"]
    assert recovered["interval"] == pytest.approx(ratio_interval([4.0, 5.0], [8.0, 9.0]))
    assert recovered["value"] == pytest.approx(4.5 / 8.5)
    assert recovered["interval"][0] < recovered["value"] < recovered["interval"][1]
    # a plant that bit in one draw only is not told apart from no bite: the share's interval is unbounded
    assert summarise([draw(0.0, 0.0, 0.5, [1]), draw(9.0, 4.0, 1.5, [1])])["target"]["drop_recovered"]["interval"] is None


def test_presets_differ_in_size():
    quick, full = causal_settings(True), causal_settings(False)
    assert quick.quick and not full.quick and full.seeds == 3 and full.test is None
    assert causal_settings(True, seeds=2).seeds == 2


def test_the_plant_stays_within_the_first_words_so_truncation_keeps_it():
    text = " ".join(f"w{i}" for i in range(200))
    split = Split((text,) * 50, (1,) * 50)
    poisoned = poison(split, "zqxv", target=1, rates=(1.0, 0.0), seed=0, within=5)
    assert all(t.split().index("zqxv") <= 5 for t in poisoned.texts)


def gate_row(method: str, clean: float, counterfactual: float) -> dict:
    return {"method": method, "gate": {"accuracy": clean, "counterfactual_accuracy": counterfactual}}


def test_the_gate_takes_the_mildest_weight_within_a_standard_error_of_the_best():
    base = gate_row("swarm_distill", 0.80, 0.60)
    tried = [gate_row("rrr=10", 0.80, 0.760), gate_row("rrr=100", 0.795, 0.764), gate_row("rrr=1000", 0.70, 0.9)]
    # 1000 is more than the slack below swarm_distill's clean gate accuracy; 100 is best by 0.4 points
    assert choose_on_gate(base, tried, 1.0, "best")["method"] == "rrr=100"
    # one standard error of 0.764 over 450 texts is 2.0 points: 10 is within it and the mildest
    assert choose_on_gate(base, tried, 1.0, "mildest_within_se", 450)["method"] == "rrr=10"
    # a clear win (10 points) of the stronger weight is still taken
    tried[1]["gate"]["counterfactual_accuracy"] = 0.86
    assert choose_on_gate(base, tried, 1.0, "mildest_within_se", 450)["method"] == "rrr=100"
    # none within the slack: the highest clean gate accuracy
    assert choose_on_gate(gate_row("s", 0.95, 0.5), tried, 1.0, "mildest_within_se", 450)["method"] == "rrr=10"


def test_one_word_per_domain_or_one_for_all():
    settings = causal_settings(True, domains=["a", "b"], planted=["w1", "w2"])
    assert settings.planted_words() == {"a": "w1", "b": "w2"}
    assert causal_settings(True, domains=["a", "b"], planted="w").planted_words() == {"a": "w", "b": "w"}
    for bad, says in ((["w1"], "one per domain"), (["w", "w"], "distinct")):
        with pytest.raises(ValidationError, match=says):
            causal_settings(True, domains=["a", "b"], planted=bad)
