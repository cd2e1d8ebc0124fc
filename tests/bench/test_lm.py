"""The derive rows of the causal-LM bench on a tiny Llama: five models, smaller students, honest targets."""

from __future__ import annotations

import math

import pytest

from fanbu.bench.lm.derive import (
    LMDeriveBenchSettings,
    derive_models,
    derive_targets,
    lm_derive_settings,
    scratch_like,
    tokens_per_second,
)
from fanbu.evaluate.speed import param_count
from fanbu.models.causal_lm import CausalLMHandle

TEXTS = [
    "the state of the world is good and the people are happy",
    "the government said the law will change next year",
    "a new school opened in the city this week for children",
    "the church and the house stand on the same side of the road",
] * 6


def test_five_models_with_smaller_students_and_the_scratch_shape() -> None:
    base = CausalLMHandle.tiny(hidden_size=32, num_layers=4, max_length=32)
    settings = LMDeriveBenchSettings(
        window=16,
        max_windows=12,
        batch_size=4,
        lora_steps=2,
        distill_steps=3,
        lora_r=2,
        top_k=8,
        calibration=8,
        half={"layers": 2, "ffn": 32, "importance": "minitron"},
        quarter={"layers": 1, "heads": 2, "hidden": 16, "ffn": 32, "importance": "minitron"},
    )
    models = derive_models(base, TEXTS, TEXTS[:4], settings)
    assert list(models) == ["teacher", "domain_teacher", "student_05", "student_025", "scratch_05"]
    params = {name: param_count(m.model) for name, m in models.items()}
    assert params["student_025"] < params["student_05"] < params["domain_teacher"] == params["teacher"]
    assert params["scratch_05"] == params["student_05"]
    assert models["teacher"] is base and models["domain_teacher"].model is not base.model
    speed = tokens_per_second(models["student_025"], TEXTS[0], tokens=8, repeats=1)
    assert math.isfinite(speed) and speed > 0


def test_targets_take_the_worst_domain_and_never_soften() -> None:
    rows = []
    for domain, student_ppl in (("a", 30.0), ("b", 60.0)):
        for model, ppl, speed in (
            ("teacher", 35.0, 10.0),
            ("domain_teacher", 25.0, 10.0),
            ("student_05", student_ppl, 20.0),
            ("student_025", 50.0, 30.0),
            ("scratch_05", 300.0, 20.0),
        ):
            rows.append({"domain": domain, "model": model, "params": 1, "ppl": ppl, "tokens_per_s": speed})
    target = derive_targets(rows)
    assert target["student_05_vs_domain_teacher"]["value"] == pytest.approx(60 / 25)
    assert not target["student_05_vs_domain_teacher"]["met"]  # domain b fails the 1.5x bar
    assert target["student_025_vs_domain_teacher"]["met"] and target["student_speedup"]["met"]
    assert target["scratch_vs_student_05"]["value"] == pytest.approx(5.0)


def test_quick_preset_is_one_domain_and_scratch_keeps_the_shape() -> None:
    quick = lm_derive_settings(True)
    assert quick.domains == ["bbc-tech"] and quick.distill_steps < lm_derive_settings(False).distill_steps
    student = CausalLMHandle.tiny(num_layers=2, max_length=32, seed=1)
    scratch = scratch_like(student, seed=0)
    assert scratch.model.config.to_dict() == student.model.config.to_dict()
    first = next(iter(student.model.state_dict()))
    assert not scratch.model.state_dict()[first].equal(student.model.state_dict()[first])
