"""``fanbu adapt`` on a tiny registry: a derived small model learns from its curated serving logs."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.collect import CurateConfig, LogStore, curate
from fanbu.collect.hashing import stored_form
from fanbu.collect.store import Answer, Prediction
from fanbu.derive.adapt import AdaptConfig, model_slices, run_adapt, take_tiers
from fanbu.derive.data import DeriveData
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.errors import ConfigError, ModelError
from fanbu.models import EncoderHandle, ModuleHandle, Provenance
from fanbu.models.encoder import read_sidecar
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace

SMALL = "sci.quantize"
WORDS = {"space": "orbit rocket nasa launch moon", "med": "doctor patient disease drug clinic"}
FAST = {"int8": False, "onnx": False, "onnx_int8": False}  # the fp32 twin only, where int8 is not the point
ROOT = Path(__file__).resolve().parents[2]


def texts_of(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(sorted(WORDS))
        rows.append((" ".join(rng.sample(WORDS[label].split(), 3) + [f"w{seed}x{i}"]), label))
    return rows


def log(
    store: LogStore, pid: str, text: str, label: str, confidence: float, large: str | None = None
) -> None:
    stored, digest = stored_form(text, "text")
    probs = (confidence, 1 - confidence) if label == "med" else (1 - confidence, confidence)
    answers = [Answer("small" if large else "single", f"{SMALL}:v0", label, confidence, probs)]
    if large:
        answers.append(Answer("large", "teacher:v0", large, 0.95, (0.95, 0.05)))
    store.log_batch([Prediction(pid.ljust(32, "0"), "edge", "sci", stored, digest, "text", tuple(answers))])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with sci.quantize:v0 (derived: prune -> quantize) and a dataset curated from its logs:
    4 human, 6 pseudo, 4 hard examples and 2 unlabeled texts."""
    root = tmp_path_factory.mktemp("adapt")
    with open(root / "sci.jsonl", "w") as fh:
        fh.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in texts_of(120, 0))
    EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64).save(
        root / "teacher", Provenance(name="tiny")
    )
    recipe = DeriveRecipe.model_validate(
        {
            "teacher": str(root / "teacher"),
            "max_length": 32,
            "data": {"source": "files", "files": [{"name": "sci", "train": str(root / "sci.jsonl")}]},
            "stages": [
                {
                    "prune": {
                        "layers": 1,
                        "heads": 2,
                        "hidden": 16,
                        "ffn": 0.5,
                        "vocab": 200,
                        "calibration": 32,
                    }
                },
                {"quantize": {"check_texts": 4}},
            ],
        }
    )
    registry = Registry.open(root / "home")
    run_derive(recipe, registry)
    rows = iter(texts_of(16, 1))
    with LogStore(registry.url) as store:
        for i in range(4):  # corrected by a user: human
            text, label = next(rows)
            log(store, f"h{i}", text, "space" if label == "med" else "med", 0.6)
            store.add_feedback(f"h{i}".ljust(32, "0"), label=label)
        for i in range(6):  # confident: pseudo
            text, label = next(rows)
            log(store, f"p{i}", text, label, 0.97)
        for i in range(4):  # escalated: hard, labelled by the large model
            text, label = next(rows)
            log(store, f"x{i}", text, "med", 0.4, large=label)
        for i in range(2):  # neither: unlabeled
            log(store, f"u{i}", next(rows)[0], "med", 0.6)
    curate(registry, CurateConfig(name="collected"))
    registry.close()
    return root / "home"


@pytest.fixture
def home(base: Path, tmp_path: Path) -> Path:
    """A private copy of the base registry (its models and datasets are read where they are)."""
    return Path(shutil.copytree(base, tmp_path / "home"))


def config(**settings: object) -> AdaptConfig:
    raw = {
        "model": SMALL,
        "collected": "collected",
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "progress": False},
        "quantize": FAST,
    }
    return AdaptConfig.model_validate({**raw, **settings})


def adapt_in(home: Path, **settings: object) -> dict:
    registry = Registry.open(home)
    try:
        return run_adapt(config(**settings), registry)
    finally:
        registry.close()


def weights(registry: Registry, model_id: str) -> dict[str, str]:
    return json.loads((Path(registry.get_model(model_id).path) / "fanbu.json").read_text())["weights"]


def test_adapt_registers_the_next_version_with_its_lineage_and_int8_deployment(home: Path) -> None:
    summary = adapt_in(home, quantize={"check_texts": 4})
    registry = Registry.open(home)
    old, new = registry.get_model(f"{SMALL}:v0"), registry.get_model(f"{SMALL}:v1")
    assert summary["model"] == new.id and summary["parent"] == old.id and new.name == old.name
    assert new.parents == (old.id,) and new.relation == "finetune" and new.status == "candidate"
    [dataset] = registry.model_datasets(new.id)
    assert dataset.id == summary["collected"] and new.fingerprints["collected"] == dataset.fingerprint
    assert new.fingerprints["private"] == old.fingerprints["private"]
    assert summary["examples"] == {"human": 4, "pseudo": 6, "hard": 4} and summary["replay"] == 14
    assert set(summary["validation_accuracy"]) == {"before", "after"} and summary["seconds"] > 0
    assert {e.split for e in registry.evaluations(new.id)} == {"validation"}  # never the test split
    int8 = Workspace(registry).load(new.id, runtime="onnx_int8")
    assert int8.predict(["doctor patient drug", "orbit rocket moon"], "sci").shape == (2,)
    assert summary["deployment"]["onnx_int8_agreement"] > 0.5
    before, after = read_sidecar(Path(old.path)), read_sidecar(Path(new.path))
    assert before is not None and after is not None and after.meta == before.meta
    assert all(torch.equal(after.tensors[k], v) for k, v in before.tensors.items())
    assert weights(registry, new.id) != weights(registry, old.id)
    registry.close()
    again = adapt_in(home)  # v1 recorded its replay data: it adapts in turn
    assert again["model"] == f"{SMALL}:v2" and again["parent"] == f"{SMALL}:v1"


def test_tiers_are_taken_in_order_of_trust_under_a_cap(home: Path) -> None:
    tiers = {"human": (["h"], [0]), "pseudo": (["p1", "p2"], [1, 1]), "hard": (["x"], [0])}
    assert take_tiers(tiers, ["hard", "human", "pseudo"], 2) == (
        (["h", "p1"], [0, 1]),
        {"human": 1, "pseudo": 1, "hard": 0},
    )
    assert take_tiers(tiers, ["hard", "pseudo"], None)[1] == {"human": 0, "pseudo": 2, "hard": 1}
    capped = adapt_in(home, max_examples=5, replay=0.0)
    assert capped["examples"] == {"human": 4, "pseudo": 1, "hard": 0}
    picked = adapt_in(home, tiers=["hard", "pseudo"], max_examples=8, replay=0.5)
    assert picked["examples"] == {"human": 0, "pseudo": 6, "hard": 2} and picked["replay"] == 4


def test_replay_is_mixed_in_and_the_seed_decides_everything(
    home: Path, tmp_path: Path, one_thread: None
) -> None:
    twin = Path(shutil.copytree(home, tmp_path / "twin"))
    with_replay, same, without = adapt_in(home), adapt_in(twin), adapt_in(home, replay=0)
    assert with_replay["replay"] == same["replay"] == 14 and without["replay"] == 0
    registry, other = Registry.open(home), Registry.open(twin)
    assert weights(registry, with_replay["model"]) == weights(other, same["model"])
    assert weights(registry, with_replay["model"]) != weights(registry, without["model"])
    assert with_replay["validation_accuracy"] == same["validation_accuracy"]
    registry.close()
    other.close()


def _assert_nothing_made(home: Path) -> None:
    registry = Registry.open(home)
    assert [m.id for m in registry.list_models(name=SMALL)] == [f"{SMALL}:v0"]
    assert sorted(p.name for p in (home / "models" / SMALL).iterdir()) == ["v0"]  # no v1, no .partial
    assert registry.list_runs()[-1].status == "failed"
    registry.close()


def _mismatched_labels(home: Path) -> dict:
    registry = Registry.open(home)
    handle = EncoderHandle.tiny(hidden_size=16, seed=2)
    handle.add_head("sci", ["med", "space", "other"])
    registry.register_model(
        name="aaa", path=handle.save(registry.model_dir("aaa", 0), Provenance()), kind="encoder"
    )
    with LogStore(registry.url) as store:
        stored, digest = stored_form("clinic orbit", "text")
        answer = Answer("single", "aaa:v0", "other", 0.99, (0.0, 0.01, 0.99))
        store.log_batch([Prediction("m0".ljust(32, "0"), "edge", "sci", stored, digest, "text", (answer,))])
    curate(registry, CurateConfig(name="mixed"))
    registry.close()
    return {"collected": "mixed"}


def _empty(home: Path) -> dict:
    registry = Registry.open(home)
    curate(registry, CurateConfig(name="empty", domains=["nowhere"]))
    registry.close()
    return {"collected": "empty"}


def _not_a_classifier(home: Path) -> dict:
    registry = Registry.open(home)
    module = ModuleHandle(torch.nn.Linear(2, 2), {"in_features": 2, "out_features": 2}, "torch.nn:Linear")
    registry.register_model(
        name="lin", path=module.save(registry.model_dir("lin", 0), Provenance()), kind="module"
    )
    registry.close()
    return {"model": "lin"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda home: {"model": "nope"}, r"model: unknown model 'nope'"),
        (lambda home: {"collected": "nope"}, r"collected: no dataset named 'nope'"),
        (lambda home: {"domain": "med"}, r"domain: model sci.quantize:v0 has no classifier head 'med'"),
        (_not_a_classifier, r"model: model lin:v0 is a 'module' model"),
        (
            _mismatched_labels,
            r"collected: dataset mixed@\w+ labels domain 'sci' with \['med', 'space', 'other'\]",
        ),
        (_empty, r"nothing to adapt on: .*collect more traffic, or enable tiers"),
    ],
    ids=["model", "dataset", "head", "kind", "labels", "empty"],
)
def test_errors_name_the_setting_and_register_nothing(
    home: Path, make: Callable[[Path], dict], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        adapt_in(home, **make(home))
    _assert_nothing_made(home)


def test_replay_data_is_checked_against_the_recorded_fingerprints(base: Path, home: Path) -> None:
    spec = {"source": "files", "files": [{"name": "sci", "train": str(base.parent / "sci.jsonl")}]}
    with pytest.raises(ConfigError, match=r"replay_data: the replay_data given gives another private slice"):
        adapt_in(home, replay_data={**spec, "seed": 1})
    _assert_nothing_made(home)
    registry = Registry.open(home)
    record = registry.get_model(f"{SMALL}:v0")
    registry.close()
    moved = {**spec, "files": [{"name": "sci", "train": str(base.parent / "moved.jsonl")}]}
    lost = dataclasses.replace(record, recipe={"derive": {"data": moved}})
    with pytest.raises(
        ConfigError, match=r"cannot re-read the data spec recorded with model .*set replay_data"
    ):
        model_slices(lost, "sci", None)
    found = model_slices(lost, "sci", DeriveData.model_validate(spec))
    assert found.fingerprints == {k: record.fingerprints[k] for k in ("private", "validation")}
    assert len(found.private[0]) > 0 and len(found.validation[0]) > 0


def test_a_failed_export_leaves_no_directory_and_no_entry(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ModelError("fp32 ONNX differs from PyTorch")

    monkeypatch.setattr("fanbu.derive.quantize.deploy._build_runtimes", broken)
    with pytest.raises(ModelError, match="differs"):
        adapt_in(home)
    _assert_nothing_made(home)


def test_cli_adapts_with_the_shipped_recipe(home: Path) -> None:
    runner = CliRunner()
    recipe = str(ROOT / "recipes" / "adapt.yaml")
    args = [
        f"model={SMALL}",
        "collected=collected",
        "train.epochs=1",
        "quantize.check_texts=4",
        "--home",
        str(home),
    ]
    result = runner.invoke(app, ["adapt", recipe, *args])
    assert result.exit_code == 0, result.output
    assert f"{SMALL}:v1 (from {SMALL}:v0" in result.output
    registry = Registry.open(home)
    assert registry.get_model(f"{SMALL}:v1").relation == "finetune"
    registry.close()
    failed = runner.invoke(app, ["adapt", recipe, "model=nope", "--home", str(home)])
    assert failed.exit_code == 2 and "model: unknown model 'nope'" in failed.output
