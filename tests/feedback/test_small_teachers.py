"""Small models of other shapes as the swarm: every strategy that can work across architectures accepts
them (logits, features through learned projections, multitask soft labels, the naive sequential
baseline). The weight-space strategies refuse them and name what to use instead: see
tests/test_registered_entries.py."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from _merge_fixtures import tiny_swarm
from feedback_helpers import quick_dict

from fanbu.config import validate
from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder
from fanbu.feedback import STRATEGIES, FeedbackContext
from fanbu.models.encoder import EncoderHandle

ACROSS_ARCHITECTURES = [
    ("swarm_distill", {}),
    ("swarm_distill", {"feature_weight": 1.0}),  # pooled features through a projection per width
    ("multitask", {}),
    ("sequential", {}),
]


def small_swarm() -> tuple[FeedbackContext, dict[str, EncoderHandle]]:
    """The tiny swarm with each expert pruned to another width (hidden 16 and 24, FFN 32 and 48)."""
    swarm = tiny_swarm()
    shapes = {"sentiment": PruneConfig(heads=2, hidden=16, ffn=32), "topic": PruneConfig(heads=3, hidden=24, ffn=48)}
    experts = {
        domain: prune_encoder(copy.deepcopy(expert), shapes[domain], Calibration(swarm.public[domain][0]))
        for domain, expert in swarm.experts.items()
    }
    return swarm, experts


@pytest.mark.parametrize(("name", "extra"), ACROSS_ARCHITECTURES, ids=lambda v: str(v))
def test_small_teachers_of_other_widths_feed_back(name: str, extra: dict, tmp_path: Path) -> None:
    swarm, experts = small_swarm()
    widths = {d: e.model.encoder.config.hidden_size for d, e in experts.items()}
    assert widths == {"sentiment": 16, "topic": 24} != swarm.large.model.encoder.config.hidden_size
    info = STRATEGIES.get(name)
    settings = {"train": quick_dict(epochs=1), **extra}
    if "selection_tolerance" in info.config.model_fields:
        settings["selection_tolerance"] = None  # keep both teachers: this test is about their shapes
    config = validate(info.config, settings, source=name)
    out = info.run(swarm.context(tmp_path / "work", experts), config)

    assert out.handle.model.encoder.config.hidden_size == swarm.large.model.encoder.config.hidden_size
    for head in sorted(swarm.large.labels):
        texts = swarm.tests[head][0][:16]
        probs = out.handle.predict_proba(texts, head)
        assert probs.shape == (len(texts), len(swarm.large.labels[head]))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    changed = any(
        not np.allclose(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(out.handle.model.parameters(), swarm.large.model.parameters(), strict=True)
    )
    assert changed  # the small teachers moved the candidate
