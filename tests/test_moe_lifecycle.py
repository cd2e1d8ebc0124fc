"""An MoE candidate lives the whole loop: promoted, fed back from, served, and derived from by the cycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.feedback.pipeline import run_feedback
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.models import MoEHandle, load_handle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from fanbu.serve.models import ModelPool
from tests.report.workspace import DOMAINS, HELDOUT, domain_files, large_v0, quick, small_stages

PASS_ALL = {"tolerance": 1.0, "require_mean_not_worse": False}  # every candidate passes the gate
EXPERTS = {"derive": {"stages": [{"finetune": {"train": quick(epochs=2)}}]}}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_a_promoted_moe_is_fed_back_from_served_and_derived_from(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "home")
    large_v0(registry)
    data = domain_files(tmp_path)
    moe = {"moe": {"train": quick(epochs=1), "selection": {"enabled": False}}}
    first = FeedbackRecipe.model_validate(
        {"max_length": 32, "data": data, "experts": EXPERTS, "strategies": [moe], "gate": PASS_ALL}
    )
    assert run_feedback(first, registry)["promoted"] == "large:v1"
    champion = registry.get_model("large:v1")
    assert champion.status == "champion" and champion.kind == "moe"
    assert isinstance(Workspace(registry).load("large"), MoEHandle)

    # Served: the pool loads it through the spine and answers on every head.
    served = ModelPool(registry).get("large")
    assert isinstance(served.predictor, MoEHandle)
    probs = served.predictor.predict_proba(["software program data", "sad war"], "tech", 2)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # Fed back from: `fanbu feedback` takes the MoE as its champion.
    recipe = {
        "champion": "large",
        "max_length": 32,
        "data": data,
        "experts": EXPERTS,
        "strategies": [{"swarm_distill": {"train": quick(epochs=1)}}],
        "gate": PASS_ALL,
    }
    path = tmp_path / "feedback.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["feedback", str(path), "--home", str(registry.home)])
    assert result.exit_code == 0, result.output
    feedback = [r for r in registry.list_runs() if r.kind == "feedback"][-1]
    assert feedback.status == "succeeded" and feedback.summary["champion"] == "large:v1"
    candidate = registry.get_model(feedback.summary["strategies"][0]["model"])
    assert candidate.id == "large:v2" and "large:v1" in candidate.parents
    assert candidate.status == "champion" and candidate.kind == "moe"  # distilled into a copy of the MoE

    # The next generation of the cycle derives its small models from the MoE (dense students).
    cycle = {
        "max_length": 32,
        "data": data,
        "derive": {"stages": small_stages()},
        "deployment": {"enabled": False},  # the MoE's dense students are what this test follows
        "experts": {"source": "finetune", **EXPERTS},
        "strategies": [{"merge": {"method": "average", "selection": {"enabled": False}}}],
        "gate": PASS_ALL,
    }
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(cycle))
    result = CliRunner().invoke(app, ["cycle", str(path), "--generations", "1", "--home", str(registry.home)])
    assert result.exit_code == 0, result.output
    for domain in DOMAINS:
        prune = registry.latest(f"{domain}.prune")
        assert prune is not None and prune.parents == ("large:v2",)
        small = load_handle(registry.latest(f"{domain}.distill").path)
        assert not isinstance(small, MoEHandle) and small.kind == "encoder"
        assert small.predict(["software program"], domain).shape == (1,)
    assert set(HELDOUT) <= set(load_handle(registry.latest("large").path).labels)
    registry.close()
