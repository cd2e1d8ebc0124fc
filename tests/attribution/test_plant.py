"""The causal bench's plant and its targets (``fanbu.bench.structure.causal``), without any model."""

from __future__ import annotations

from fanbu.bench.structure.causal import causal_settings, poison, summarise
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


def test_presets_differ_in_size():
    quick, full = causal_settings(True), causal_settings(False)
    assert quick.quick and not full.quick and full.seeds == 3 and full.test is None
    assert causal_settings(True, seeds=2).seeds == 2


def test_the_plant_stays_within_the_first_words_so_truncation_keeps_it():
    text = " ".join(f"w{i}" for i in range(200))
    split = Split((text,) * 50, (1,) * 50)
    poisoned = poison(split, "zqxv", target=1, rates=(1.0, 0.0), seed=0, within=5)
    assert all(t.split().index("zqxv") <= 5 for t in poisoned.texts)
