"""The derive bench: its recipes, a scratch baseline with the distilled student's data, transfer texts and
steps, targets in the JSON, and seeds reported as a mean with an interval (end to end on a tiny encoder)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import fanbu.bench.derive as bench
from fanbu.bench import baselines
from fanbu.bench.baselines import choose_threshold, planned_steps, self_train_scratch
from fanbu.bench.derive import bench_recipe, print_table, targets, with_seed
from fanbu.bench.stats import seed_interval
from fanbu.cli import app
from fanbu.derive import stages
from fanbu.derive.data import load_domain_data
from fanbu.derive.pipeline import DeriveRecipe
from fanbu.derive.stages import parse_stages
from fanbu.models import EncoderHandle
from fanbu.models.artefact import Provenance
from fanbu.train.config import TrainConfig

KEYS = ("teacher_acc", "student_acc", "retention", "param_ratio", "speedup_b1", "speedup_b32",
        "scratch_acc", "tfidf_acc")


def test_bench_recipes_validate_and_quick_caps_the_data() -> None:
    quick, full = bench_recipe(True), bench_recipe(False)
    for recipe in (quick, full):
        assert [name for name, _ in parse_stages(recipe.stages)] == ["finetune", "prune", "distill", "quantize"]
        assert (recipe.max_length, recipe.truncation) == (256, "head_tail")
    assert quick.data.max_train == 600 and full.data.max_train is None  # full: the whole private slices
    assert quick.data.max_transfer == 600 and full.data.max_transfer is None


def test_a_seed_moves_the_data_split_and_every_stage_s_training() -> None:
    recipe = with_seed(bench_recipe(True), 4)
    assert recipe.data.seed == 4 and recipe.data.max_train == 600
    trains = [config.train.seed for name, config in parse_stages(recipe.stages) if hasattr(config, "train")]
    assert trains == [4, 4]  # finetune, distill
    assert bench_recipe(True).data.seed == 0  # the bench's recipe is untouched


def test_table_prints_every_domain_and_the_mean() -> None:
    rows = [{"name": n, **{k: float(i) for k in KEYS}} for i, n in enumerate(["comp", "rec"])]
    report = {"quick": True, "seconds": 1.0, "domains": rows, "mean": {k: 0.5 for k in KEYS}}
    out = io.StringIO()
    print_table(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "comp" in text and "rec" in text and "mean" in text and "0.500" in text
    assert "same labelled private data" in text  # the legend says what the scratch student gets


def test_planned_steps_follow_the_loop() -> None:
    config = TrainConfig(epochs=3, batch_size=16)
    assert planned_steps(1200, config) == 75 * 3
    assert planned_steps(17, config) == 2 * 3
    assert planned_steps(1200, config.model_copy(update={"grad_accum": 2})) == 38 * 3
    assert planned_steps(1200, config.model_copy(update={"max_steps": 100})) == 100


def test_threshold_is_chosen_on_validation_outcomes() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert choose_threshold(confidence, np.array([1, 1, 0, 0, 0], dtype=bool)) == 0.8
    assert choose_threshold(confidence, np.array([1, 1, 1, 1, 0], dtype=bool)) == 0.6  # +4 against +3 for all
    assert choose_threshold(confidence, np.array([1, 1, 1, 0, 1], dtype=bool)) == 0.0  # +3 ties: the lowest
    assert choose_threshold(confidence, np.array([0, 0, 1, 0, 0], dtype=bool)) is None  # keep none


def test_seed_interval_is_a_t_interval_and_needs_two_seeds() -> None:
    assert seed_interval([0.8]) is None
    low, high = seed_interval([0.7, 0.8, 0.9])
    assert low < 0.8 < high and high - 0.8 == pytest.approx(2.919986 * 0.1 / 3**0.5, rel=1e-5)


def test_targets_are_met_on_the_mean_and_reported_short_otherwise() -> None:
    mean = {"retention": 0.97, "param_ratio": 0.12, "speedup_b1": 7.4, "student_minus_scratch": 0.05,
            "student_minus_tfidf": -0.02}
    spans = {"retention": [0.9, 0.98], "param_ratio": None, "speedup_b1": None, "student_minus_scratch": None,
             "student_minus_tfidf": None}
    result = targets(mean, spans)
    assert {k: (t["value"], t["bar"], t["met"]) for k, t in result.items()} == {
        "retention": (0.97, 0.98, False),
        "param_ratio": (0.12, 0.15, True),
        "speedup_b1": (7.4, 10.0, False),
        "beats_scratch": (0.05, 0.0, True),
        "beats_tfidf": (-0.02, 0.0, False),
    }
    assert result["retention"]["interval"] == [0.9, 0.98]


def _pairs(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    words = {0: "orbit rocket nasa launch", 1: "doctor patient disease drug"}
    labels = [int(y) for y in rng.integers(0, 2, n)]
    return [" ".join(rng.permutation(words[y].split())) for y in labels], labels


def test_scratch_gets_the_distilled_students_steps_and_sees_every_transfer_text(monkeypatch) -> None:
    student = EncoderHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=16)
    student.add_head("sci", ["space", "med"])
    train, validation, test = _pairs(20, 0), _pairs(12, 1), _pairs(12, 2)
    transfer = [f"{t} extra" for t in _pairs(28, 3)[0]]
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, progress=False)
    seen: list[list[str]] = []
    train_heads = baselines.train_heads

    def spy(handle, data, cfg, *args, **kwargs):
        seen.append(list(data["sci"][0]))
        return train_heads(handle, data, cfg, *args, **kwargs)

    monkeypatch.setattr(baselines, "train_heads", spy)
    result = self_train_scratch(student, "sci", train, validation, test, transfer, config, threshold=0.0)
    budget = planned_steps(20 + 28, config)  # what the distil loop takes on labelled + transfer texts
    assert result.budget == budget == 2 * 6 and result.steps == budget
    assert result.labelled_steps == 2 * 3 and result.self_training_steps == budget - 6
    assert seen[0] == train[0]  # phase 1: the labelled data alone
    assert set(transfer) <= set(seen[1]) and result.pseudo_labelled == result.transfer_texts == 28
    assert 0.0 <= result.accuracy <= 1.0 and result.kept in ("labelled", "self_trained")


def _tiny_recipe(teacher: str):
    def make(quick: bool) -> DeriveRecipe:
        return DeriveRecipe.model_validate({
            "teacher": teacher,
            "max_length": 32,
            "truncation": "head_tail",
            "data": {"max_train": 48, "max_validation": 16, "max_test": 32, "transfer": "public",
                     "max_transfer": 24},
            "stages": [
                {"finetune": {"train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "progress": False}}},
                {"prune": {"layers": 1, "heads": 2, "hidden": 16, "ffn": 0.5, "vocab": 200, "calibration": 16}},
                {"distill": {"hidden_weight": 1.0, "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3,
                                                             "progress": False}}},
                {"quantize": {"int8": True, "onnx": True, "onnx_int8": True, "check_texts": 4}},
            ],
        })

    return make


def test_bench_end_to_end_on_a_tiny_encoder_with_two_seeds(tmp_path, monkeypatch) -> None:
    teacher = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    teacher.save(tmp_path / "teacher", Provenance(name="tiny"))
    monkeypatch.setattr(bench, "bench_recipe", _tiny_recipe(str(tmp_path / "teacher")))
    distilled: list[int] = []
    distill = stages.distill

    def spy(*args, **kwargs):
        result = distill(*args, **kwargs)
        distilled.append(result.state.global_step)
        return result

    monkeypatch.setattr(stages, "distill", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    try:
        args = ["bench", "derive", "--quick", "--domain", "rec", "--seeds", "2", "--work", str(tmp_path / "work")]
        result = CliRunner().invoke(app, [*args, "--out", str(out)])
        again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "again.json")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["seeds"] == [0, 1] and "--seeds 2" in report["command"]
    assert len(distilled) == 2  # one distilled student per seed
    for run, steps in zip(report["runs"], distilled, strict=True):
        [row] = run["domains"]
        data = load_domain_data(with_seed(bench.bench_recipe(True), run["seed"]).data, "rec")
        assert (row["n_train"], row["n_transfer"]) == (48, len(data.transfer)) == (48, 24)
        scratch = row["scratch"]
        assert scratch["steps"] == scratch["budget"] == row["distill_steps"] == steps == 2 * 9
        assert scratch["transfer_texts"] == 24 and 0 <= scratch["pseudo_labelled"] <= 24
        assert scratch["labelled_steps"] + scratch["self_training_steps"] == steps
    for key in KEYS:
        values = [run["mean"][key] for run in report["runs"]]
        assert report["mean"][key] == pytest.approx(sum(values) / 2)
        low, high = report["interval"][key]
        assert low <= report["mean"][key] <= high
    assert set(report["target"]) == {"retention", "param_ratio", "speedup_b1", "beats_scratch", "beats_tfidf"}
    for target in report["target"].values():
        assert {"value", "bar", "met", "interval"} <= set(target)
        assert isinstance(target["met"], bool) and len(target["interval"]) == 2
    assert report["target"]["retention"]["bar"] == 0.98
    assert report["target"]["retention"]["met"] == (report["mean"]["retention"] >= 0.98)
    assert "target retention" in result.output and "target beats_tfidf" in result.output
    assert "90% +-" in result.output
    # the rerun with the same work directory read both finished seeds back and trained nothing
    assert again.exit_code == 0, again.output
    assert len(distilled) == 2 and "finished in an earlier run" in again.output
    assert json.loads((tmp_path / "again.json").read_text())["mean"] == report["mean"]
