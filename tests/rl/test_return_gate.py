"""The gate on returns: promoted only if no training variant falls more than the tolerance below."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanbu.errors import ConfigError
from fanbu.feedback.gate.promotion import apply_decision
from fanbu.registry.workspace import Workspace
from fanbu.rl.artefacts import policy_provenance, register_policy
from fanbu.rl.gate import ReturnGateConfig, gate_policies, gate_returns
from fanbu.rl.policy import new_policy
from fanbu.rl.variants import Variant

from .conftest import balancing_teacher

CHAMPION = {"a": 400.0, "b": 300.0, "acro": -100.0}


def test_within_tolerance_everywhere_is_promoted() -> None:
    decision = gate_returns({"a": 390.0, "b": 330.0, "acro": -104.0}, CHAMPION, ReturnGateConfig(tolerance=0.05))
    assert decision.promoted and decision.reason.startswith("promoted")
    assert decision.tasks["acro"].tolerance == pytest.approx(5.0)  # 5% of |-100|


def test_one_variant_below_tolerance_rejects() -> None:
    decision = gate_returns({"a": 500.0, "b": 280.0, "acro": -90.0}, CHAMPION, ReturnGateConfig(tolerance=0.05))
    assert not decision.promoted
    assert decision.failures == ["b"] and "b return 280.0 vs champion 300.0" in decision.reason
    loose = gate_returns({"a": 500.0, "b": 280.0, "acro": -90.0}, CHAMPION,
                         ReturnGateConfig(tolerance=0.05, variant_tolerance={"b": 0.1}))
    assert loose.promoted


def test_mean_not_worse_and_mismatches() -> None:
    lower = {"a": 395.0, "b": 295.0, "acro": -101.0}
    assert not gate_returns(lower, CHAMPION).promoted  # every variant within tolerance, the mean below
    assert gate_returns(lower, CHAMPION, ReturnGateConfig(require_mean_not_worse=False)).promoted
    with pytest.raises(ConfigError, match="scored on"):
        gate_returns({"a": 1.0}, CHAMPION)
    with pytest.raises(ConfigError, match=r"variant_tolerance names \['z'\]"):
        gate_returns(CHAMPION, CHAMPION, ReturnGateConfig(variant_tolerance={"z": 0.1}))


def test_policies_gated_and_recorded_in_the_registry(tmp_path: Path, cartpole: list[Variant]) -> None:
    good, bad = balancing_teacher(), new_policy(4, 2, seed=0)
    variants = cartpole[:2]
    config = ReturnGateConfig(episodes=2)
    assert not gate_policies(bad, good, variants, config).promoted
    decision = gate_policies(good, bad, variants, config)
    assert decision.promoted and decision.metric == "return"
    workspace = Workspace.open(tmp_path / "home")
    try:
        champion = register_policy(workspace, bad, policy_provenance(bad, variants, {}), name="g", status="champion")
        candidate = register_policy(workspace, good, policy_provenance(good, variants, {}), name="g")
        updated = apply_decision(workspace.registry, candidate, champion, decision)
        assert updated.status == "champion"
        assert workspace.registry.get_model(champion.id).status == "archived"
        gate_rows = workspace.registry.evaluations(candidate.id)
        assert {e.domain for e in gate_rows} == {v.name for v in variants}
        assert all(e.split == "gate" and e.metric == "return" for e in gate_rows)
    finally:
        workspace.registry.close()
