"""``fanbu rl feedback``: registered experts -> candidates -> gate -> champion, in the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanbu.errors import ConfigError
from fanbu.registry.workspace import Workspace
from fanbu.rl.feedback import run_rl_feedback
from fanbu.rl.recipe import RLRecipe
from fanbu.rl.run import run_rl_adapt, run_train_experts

TINY = {"ppo": {"total_steps": 64, "n_envs": 1, "n_steps": 32, "batch_size": 32, "n_epochs": 1,
                "policy": {"hidden": [8]}},
        "general": {"hidden": [8]}, "episodes": 1, "gate": {"episodes": 1},
        "distill": {"rounds": 1, "steps_per_variant": 40, "train": {"epochs": 1, "progress": False}}}


def test_feedback_crowns_then_gates(tmp_path: Path) -> None:
    recipe = RLRecipe.model_validate(TINY)
    workspace = Workspace.open(tmp_path)
    try:
        with pytest.raises(ConfigError, match="run `fanbu rl train-experts` with this recipe first"):
            run_rl_feedback(recipe, workspace)
        experts = run_train_experts(recipe, workspace)
        first = run_rl_feedback(recipe, workspace)
        assert first["champion"] is None and set(first["decisions"]) == {"distill", "average"}
        assert sorted(d["status"] for d in first["decisions"].values()) == ["champion", "rejected"]
        champion = workspace.registry.latest("cartpole.general", status="champion")
        assert champion is not None and set(champion.parents) == {e["id"] for e in experts}
        second = run_rl_feedback(recipe.model_copy(update={"seed": 1}), workspace)
        assert second["champion"] == champion.id
        statuses = {d["status"] for d in second["decisions"].values()}
        assert statuses <= {"champion", "rejected"} and "candidate" not in statuses
        gated = [e for e in workspace.registry.evaluations() if e.split == "gate"]
        assert {e.domain for e in gated} == {e["variant"] for e in experts}  # the gate read every variant
        assert [r.kind for r in workspace.registry.list_runs()] == ["rl-feedback", "rl-experts", "rl-feedback",
                                                                    "rl-feedback"]
        adapted = run_rl_adapt(RLRecipe.model_validate({**TINY, "adaptation": {"max_steps": 64}}), workspace,
                               "cartpole-light-cart")
        record = workspace.registry.get_model(adapted["model"])
        current = workspace.registry.latest("cartpole.general", status="champion")
        assert record.name == "cartpole-light-cart.adapted" and record.relation == "finetune"
        assert record.parents == (current.id,) and adapted["env_steps"] >= 64
        with pytest.raises(ConfigError, match="variant 'mars' is not in family 'cartpole'"):
            run_rl_adapt(recipe, workspace, "mars")
    finally:
        workspace.registry.close()
