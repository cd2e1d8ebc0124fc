"""The causal-LM option of the derive bench on a tiny Llama: every number present, the student smaller."""

from __future__ import annotations

import math

from fanbu.bench.lm.derive import LMBenchSettings, bench_lm_domain, scratch_like
from fanbu.data.domain import Domain, Split
from fanbu.models.causal_lm import CausalLMHandle

TEXTS = [
    "the state of the world is good and the people are happy",
    "the government said the law will change next year",
    "a new school opened in the city this week for children",
    "the church and the house stand on the same side of the road",
] * 6


def test_lm_domain_row_has_every_number_and_a_smaller_student() -> None:
    teacher = CausalLMHandle.tiny(num_layers=3, max_length=32)
    domain = Domain("bbc-toy", "causal_lm", Split(tuple(TEXTS)), Split(tuple(TEXTS[:4])), Split(tuple(TEXTS[:8])),
                    metric="perplexity")
    settings = LMBenchSettings(layers=1, steps=4, batch_size=4, max_length=32, max_test=8, importance="magnitude")
    row = bench_lm_domain(teacher, domain, settings)
    assert row["name"] == "bbc-toy" and row["layers"] == 1 and row["teacher_layers"] == 3
    assert 0 < row["param_ratio"] < 1
    for key in ("teacher_ppl", "student_ppl", "scratch_ppl"):
        assert math.isfinite(row[key]) and row[key] > 1


def test_scratch_student_has_the_shape_but_not_the_weights() -> None:
    student = CausalLMHandle.tiny(num_layers=2, max_length=32, seed=1)
    scratch = scratch_like(student, seed=0)
    assert scratch.model.config.to_dict() == student.model.config.to_dict()
    first = next(iter(student.model.state_dict()))
    assert not scratch.model.state_dict()[first].equal(student.model.state_dict()[first])
