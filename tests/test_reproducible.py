"""Same seed, same numbers: a tiny derive, a tiny feedback and large v0, each run twice, agree exactly.

Between the two runs the global generators are left in different states, as other work in the same
process would leave them; large v0 is trained in two fresh processes, whose torch generators start
from different seeds. Both runs use the same thread count (float sums add up in another order on
another count, so only the same count is promised the same bits).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.feedback.pipeline import run_feedback
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.registry import Registry
from tests.report.workspace import domain_files, large_v0, quick, small_stages

ROOT = Path(__file__).resolve().parents[1]
# LoRA's matrices are drawn before the loop seeds anything: the executor's fresh generators fix them
LORA = {"finetune": {"mode": "lora", "lora": {"r": 4, "merge": True}, "train": quick(epochs=1)}}
SMALL = [LORA, *small_stages()]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _other_history(run: int) -> None:
    """Leave the global generators as different earlier work in the process would."""
    torch.manual_seed(1000 + run)
    torch.rand(17 * (run + 1))
    random.seed(run)
    np.random.seed(run)


def _evaluations(registry: Registry) -> list[tuple[str, str, str, str, float]]:
    """Every recorded metric value: (model, domain, split, metric, value), sorted."""
    return sorted((e.model_id, e.domain, e.split, e.metric, e.value) for e in registry.evaluations())


def _derive(tmp_path: Path, run: int) -> tuple[list[dict[str, Any]], list, dict[str, Any]]:
    registry = Registry.open(tmp_path / f"home{run}")
    try:
        large_v0(registry)
        data = {k: v for k, v in domain_files(tmp_path).items() if k not in ("max_public", "heldout_files")}
        recipe = DeriveRecipe.model_validate(
            {"teacher": "large", "max_length": 32, "data": data, "stages": SMALL}
        )
        _other_history(run)
        results = run_derive(recipe, registry)
        [record] = registry.list_runs()
        return results, _evaluations(registry), record.summary["environment"]
    finally:
        registry.close()


def test_a_derive_twice_gives_the_same_metrics(tmp_path: Path) -> None:
    first, second = _derive(tmp_path, 0), _derive(tmp_path, 1)
    assert [r["test"] for r in first[0]] == [r["test"] for r in second[0]]
    assert {row[2] for row in first[1]} == {"validation", "test"}
    assert first[1] == second[1]  # every stage's validation metrics, and the final test metrics
    assert first[2] == second[2] and first[2]["threads"] == 1 and first[2]["deterministic"]


def _feedback(tmp_path: Path, run: int) -> dict[str, Any]:
    registry = Registry.open(tmp_path / f"home{run}")
    try:
        large_v0(registry)
        recipe = FeedbackRecipe.model_validate(
            {
                "max_length": 32,
                "data": domain_files(tmp_path),
                "experts": {"derive": {"stages": [LORA]}},
                "strategies": [
                    {"swarm_distill": {"continual": {"lwf_weight": 1.0}, "train": quick(epochs=1)}}
                ],
                "seed": 3,
            }
        )
        _other_history(run)
        summary = run_feedback(recipe, registry)
        return {
            "expert_acc": summary["expert_acc"],
            "strategies": [{k: v for k, v in row.items() if k != "seconds"} for row in summary["strategies"]],
            "evaluations": _evaluations(registry),
        }
    finally:
        registry.close()


def test_a_feedback_twice_gives_the_same_candidate_metrics(tmp_path: Path) -> None:
    first, second = _feedback(tmp_path, 0), _feedback(tmp_path, 1)
    assert first["strategies"] and first["evaluations"]
    assert first == second


LARGE_V0 = """
import hashlib, sys
from types import SimpleNamespace

import torch

from fanbu.models import EncoderHandle
from fanbu.train import TrainConfig
from fanbu.train.large import train_large_v0
from tests.report.workspace import DOMAINS, HELDOUT, TASKS, quick, texts

start_seed = torch.initial_seed()
torch.set_num_threads(1)
tasks = (*DOMAINS, *HELDOUT)
bench = SimpleNamespace(domain=lambda name: SimpleNamespace(label_names=list(TASKS[name])))
public = {task: texts(task, 16, 0, words=2) for task in tasks}
handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
result = train_large_v0(handle, bench, public, TrainConfig(**quick(epochs=1)))
digest = hashlib.sha256()
for name, value in sorted(handle.model.state_dict().items()):
    digest.update(name.encode() + value.detach().contiguous().numpy().tobytes())
print(start_seed, result.environment["threads"], digest.hexdigest())
"""


def test_large_v0_in_two_fresh_processes_has_the_same_weights() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", LARGE_V0]
    runs = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = []
    for process in runs:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        outputs.append(out.split()[-3:])
    (seed_a, threads_a, weights_a), (seed_b, threads_b, weights_b) = outputs
    assert seed_a != seed_b  # the processes' torch generators did start apart
    assert threads_a == threads_b == "1"
    assert weights_a == weights_b
