"""LM augmentation on tiny models: prompting, the experts' filter (a disagreeing expert vetoes), dedup,
the error cases, and the synthetic dataset's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fanbu.errors import ConfigError, DomainError, RegistryError
from fanbu.models.artefact import Provenance, model_card
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import Registry
from fanbu.synthetic import (
    AugmentConfig,
    Dedup,
    FilterConfig,
    Generated,
    LMAugmentConfig,
    SyntheticSet,
    build_prompt,
    filter_generated,
    generate_texts,
    register_synthetic,
    synthesise,
    with_synthetic_share,
)

LABELS = ("sport", "politics")
EXAMPLES = {"sport": ["the team won the game", "a great game for the team"],
            "politics": ["the government set a new policy", "the president gave a speech"]}


def _keyword_expert(texts):
    """Sport when 'game' or 'team' appears, else politics."""
    sport = np.array([1.0 if {"game", "team"} & set(t.split()) else 0.0 for t in texts])
    return np.stack([0.05 + 0.9 * sport, 0.95 - 0.9 * sport], axis=1)


def _contrary_expert(texts):
    return _keyword_expert(texts)[:, ::-1]


def _generated(*pairs):
    return [Generated(text, label, "p") for text, label in pairs]


def test_the_tiny_generator_answers_few_shot_prompts_per_label() -> None:
    torch.set_num_threads(1)
    handle = CausalLMHandle.tiny(max_length=128)
    config = LMAugmentConfig(shots=2, per_label=3, max_new_tokens=6, batch_size=4)
    out = generate_texts(handle, EXAMPLES, LABELS, config, seed=0)
    assert [g.label for g in out] == ["sport"] * 3 + ["politics"] * 3
    assert all('"sport"' in g.prompt and "the team" in g.prompt for g in out[:3])
    assert all(isinstance(g.text, str) for g in out)
    again = generate_texts(handle, EXAMPLES, LABELS, config, seed=0)
    assert [g.text for g in again] == [g.text for g in out]  # seeded sampling


def test_a_label_without_examples_is_named_in_the_error() -> None:
    handle = CausalLMHandle.tiny()
    with pytest.raises(DomainError, match=r"label 'politics' has no examples.*augment\.lm"):
        generate_texts(handle, {"sport": EXAMPLES["sport"], "politics": []}, LABELS, LMAugmentConfig(per_label=1))
    with pytest.raises(DomainError, match="no labels"):
        generate_texts(handle, EXAMPLES, (), LMAugmentConfig(per_label=1))


def test_agreeing_experts_keep_and_a_disagreeing_expert_vetoes() -> None:
    texts = _generated(("our team won the big game last night", "sport"),
                       ("the new policy passed by the government today", "politics"),
                       ("the government policy on the big game", "sport"))
    config = FilterConfig(threshold=0.6, min_tokens=3)
    agreed = filter_generated(texts, {"a": _keyword_expert, "b": _keyword_expert}, LABELS, config)
    assert [g.text for g in agreed.kept] == [texts[0].text, texts[1].text, texts[2].text]
    vetoed = filter_generated(texts, {"a": _keyword_expert, "b": _contrary_expert}, LABELS, config)
    assert vetoed.kept == [] and vetoed.counts["vetoed"] == 3 and vetoed.acceptance == 0.0
    mislabeled = _generated(("the president gave a long speech today", "sport"))
    assert filter_generated(mislabeled, {"a": _keyword_expert}, LABELS, config).counts["vetoed"] == 1


def test_exact_and_near_duplicates_of_the_real_data_are_dropped() -> None:
    real = ["The team won the game, 3-1!", "a long report on the new policy of the government"]
    texts = _generated(("the TEAM won the game 3 1", "sport"),  # exact after normalising
                       ("a long report on the new policy of the government today", "politics"),  # near
                       ("the team played a game in the rain and lost it", "sport"),
                       ("the team played a game in the rain and lost it", "sport"))  # a repeat of a candidate
    result = filter_generated(texts, {"a": _keyword_expert}, LABELS, FilterConfig(threshold=0.0, jaccard=0.8), real)
    assert result.counts == {"generated": 4, "too_short": 0, "exact_duplicate": 2, "near_duplicate": 1,
                             "vetoed": 0, "accepted": 1}
    assert result.acceptance == pytest.approx(0.25)
    dedup = Dedup(real, 0.5)
    assert dedup.reason("a team lost") is None and dedup.reason("the team won the game today") == "near"


def test_filter_errors_name_the_setting() -> None:
    texts = _generated(("the team won the game again", "sport"))
    with pytest.raises(ConfigError, match="no experts"):
        filter_generated(texts, {}, LABELS, FilterConfig())
    with pytest.raises(ConfigError, match="expected"):
        filter_generated(texts, {"bad": lambda t: np.ones((len(t), 3))}, LABELS, FilterConfig())
    with pytest.raises(ConfigError, match="not among"):
        filter_generated(_generated(("the team won the game", "weather")), {"a": _keyword_expert}, LABELS,
                         FilterConfig())


def test_synthetic_sets_register_with_lineage_and_the_share_reaches_the_card(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "home")
    lineage = {"generator": "tiny", "prompts": {"template": build_prompt("{label}", ["{example}"]), "count": 1},
               "filter": FilterConfig().model_dump(), "seed": 3}
    texts = SyntheticSet("synthetic/toy", "toy", list(LABELS), lineage,
                         texts=_generated(("our team won the big game", "sport")))
    record = register_synthetic(registry, texts)
    assert record.metadata["kind"] == "synthetic" and record.metadata["lineage"]["seed"] == 3
    assert record.n_rows == 1 and register_synthetic(registry, texts).id == record.id  # same content, same id
    rows = [json.loads(line) for line in (Path(record.source) / "synthetic.jsonl").read_text().splitlines()]
    assert rows == [{"text": "our team won the big game", "label": "sport", "prompt": "p"}]
    features = SyntheticSet("synthetic/toy-gan", "toy", list(LABELS), {**lineage, "prompts": None},
                            features=torch.ones(4, 3), labels=torch.tensor([0, 1, 0, 1]))
    assert (Path(register_synthetic(registry, features).source) / "synthetic.safetensors").is_file()
    with pytest.raises(RegistryError, match="lineage lacks"):
        register_synthetic(registry, SyntheticSet("synthetic/bad", "toy", list(LABELS), {"seed": 1}))
    provenance = with_synthetic_share(Provenance(name="student"), record, real_rows=3, synthetic_rows=1)
    assert provenance.data_fingerprints["synthetic"]["synthetic_share"] == pytest.approx(0.25)
    assert "synthetic.synthetic_share: `0.25`" in model_card(provenance, "encoder")


def test_the_recipe_switch_validates() -> None:
    assert AugmentConfig().kind == "none"
    assert AugmentConfig.model_validate({"kind": "gan", "gan": {"steps": 5}}).gan.steps == 5
    with pytest.raises(ValueError, match="kind"):
        AugmentConfig.model_validate({"kind": "diffusion"})


def test_the_switch_synthesises_per_kind_and_refuses_an_empty_pool() -> None:
    torch.set_num_threads(1)
    assert synthesise(AugmentConfig(kind="none"), "toy", LABELS) is None
    gan = AugmentConfig.model_validate({"kind": "gan", "gan": {"steps": 2, "hidden": 8, "noise": 4, "per_label": 3}})
    made = synthesise(gan, "toy", LABELS, features=torch.randn(6, 4), labels=torch.tensor([0, 1] * 3))
    assert made is not None and made.rows == 6 and made.lineage["prompts"] is None and made.name == "synthetic/toy-gan"
    lm = AugmentConfig.model_validate({"kind": "lm", "lm": {"per_label": 2, "max_new_tokens": 4, "shots": 1,
                                                            "filter": {"threshold": 0.0, "min_tokens": 1}}})
    made = synthesise(lm, "toy", LABELS, examples=EXAMPLES, experts={"a": _keyword_expert},
                      load_generator=lambda source: CausalLMHandle.tiny(max_length=128))
    assert made is not None and made.lineage["filter"]["generated"] == 4 and made.lineage["seed"] == 0
    with pytest.raises(DomainError, match="empty"):
        synthesise(lm, "toy", LABELS, examples={"sport": [], "politics": []}, experts={"a": _keyword_expert})
    with pytest.raises(DomainError, match="augment.gan"):
        synthesise(gan, "toy", LABELS, features=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match="needs"):
        synthesise(gan, "toy", LABELS)


def test_an_echoed_example_label_is_stripped() -> None:
    from fanbu.synthetic.text import clean

    assert clean("Example 3:  the team   won") == "the team won" and clean("The example given") == "The example given"
