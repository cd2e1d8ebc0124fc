"""``fanbu bench lm`` feedback rows: settings, the rows' method settings, and PGR in log-perplexity."""

from __future__ import annotations

import math

import pytest

from fanbu.bench.lm.feedback import feedback_settings, method_rows
from fanbu.feedback.lm import LM_METHODS
from fanbu.feedback.lm.pipeline import log_pgr


@pytest.mark.parametrize("quick", [True, False])
def test_every_row_validates_and_baselines_get_the_same_steps(quick: bool) -> None:
    settings = feedback_settings(quick)
    rows = method_rows(settings)
    names = [name for name, _, _ in rows]
    assert names[-2:] == ["multi-teacher KD", "sequential (baseline)"]
    assert {f"merge:{m}" for m in settings.merge_methods} <= set(names)
    configs = {name: LM_METHODS.get(strategy).config.model_validate(raw) for name, strategy, raw in rows}
    kd, sequential = configs["multi-teacher KD"], configs["sequential (baseline)"]
    assert sequential.train.max_steps * len(settings.domains) == kd.train.max_steps  # same steps in total
    assert sequential.mode == kd.mode and sequential.train.lr == kd.train.lr
    assert 2 <= len(settings.domains) <= 3


def test_pgr_in_log_perplexity() -> None:
    assert log_pgr(40.0, 40.0, 20.0) == 0.0
    assert log_pgr(40.0, 20.0, 20.0) == pytest.approx(1.0)
    assert log_pgr(40.0, math.sqrt(800.0), 20.0) == pytest.approx(0.5)
    assert log_pgr(40.0, 30.0, 41.0) is None  # a teacher no better than v0 leaves no gap
