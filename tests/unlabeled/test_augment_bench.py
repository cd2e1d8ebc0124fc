"""The augment section of ``fanbu bench unlabeled`` end to end on a toy domain, toy features and a tiny LM."""

from __future__ import annotations

import json
import zlib

import pytest
import torch
from rich.console import Console

import fanbu.bench.unlabeled as bench
from fanbu.bench.unlabeled.augment import pgr
from fanbu.bench.unlabeled.augment_data import AugmentBenchConfig
from fanbu.data.domain import Domain, Split
from fanbu.errors import ConfigError
from fanbu.models.causal_lm import CausalLMHandle

NAMES = ("politics", "sport")
WORDS = {"politics": "government policy president", "sport": "team game sport"}


def _split(per_label: int, tag: str) -> Split:
    texts, labels = [], []
    for index, name in enumerate(NAMES):
        for i in range(per_label):
            texts.append(f"{WORDS[name].split()[i % 3]} {tag} note {i} about the {name} news")
            labels.append(index)
    return Split(tuple(texts), tuple(labels))


def toy_builtin(name: str, seed: int = 0, max_train_per_label: int | None = None) -> list[Domain]:
    return [Domain("toy-news", "classification", _split(30, "train"), _split(8, "validation"), _split(8, "test"),
                   NAMES)]


def toy_encode(texts: list[str]) -> torch.Tensor:
    rows = []
    for text in texts:
        row = torch.randn(6, generator=torch.Generator().manual_seed(zlib.crc32(text.encode()))) * 0.5
        for index, name in enumerate(NAMES):
            row[index] += 2.0 * sum(word in text.split() for word in WORDS[name].split())
        rows.append(row)
    return torch.stack(rows)


class ToyStore:
    def __init__(self, handle, batch_size):
        pass

    def __call__(self, texts):
        return toy_encode(list(texts))


@pytest.fixture
def toy_augment(monkeypatch):
    config = AugmentBenchConfig.model_validate({
        "max_train_per_label": 30, "public_per_label": 3, "pool": 10,
        "student": {"steps": 8, "batch_size": 8, "hidden": 8}, "teacher": {"steps": 20, "batch_size": 8, "hidden": 8},
        "lm": {"generator": "tiny", "shots": 2, "per_label": 3, "max_new_tokens": 8, "batch_size": 6,
               "filter": {"min_tokens": 1}},
        "gan": {"noise": 4, "hidden": 8, "batch_size": 8, "per_label": 4}, "gan_steps": [2, 4],
        "thresholds": [0.0, 0.9],
    })
    monkeypatch.setattr("fanbu.bench.unlabeled.augment_data.load_builtin", toy_builtin)
    monkeypatch.setattr(bench, "augment_settings", lambda quick: config)
    monkeypatch.setattr(bench, "load_encoder", lambda config: None)
    monkeypatch.setattr(bench, "FeatureStore", ToyStore)
    monkeypatch.setattr(bench, "load_generator", lambda source: CausalLMHandle.tiny(max_length=256))
    torch.set_num_threads(1)


def test_the_augment_section_runs_end_to_end(toy_augment, tmp_path) -> None:
    out, work = tmp_path / "u.json", tmp_path / "work"
    console = Console(record=True, width=220)
    bench.run_bench(True, out, console, seeds=2, work=work, sections=("augment",))
    saved = json.loads(out.read_text())
    assert "da" not in saved and saved["command"].endswith(f"--sections augment --out {out}")
    assert [(r["task"], r["kind"]) for r in saved["augment"]] == [
        (t, k) for t in ("head", "distill") for k in ("none", "lm", "gan")]
    for row in saved["augment"]:
        assert {"kind", "pool", "acc", "pgr", "acceptance"} <= set(row) and row["seeds"] == 2
        assert 0.0 <= row["acc"] <= 1.0 and row["steps"] == 8
    lm = next(r for r in saved["augment"] if r["kind"] == "lm")
    assert 0.0 <= lm["acceptance"] <= 1.0
    assert next(r for r in saved["augment"] if r["task"] == "distill")["pool"] == 10
    gan = next(r for r in saved["augment"] if r["kind"] == "gan")
    assert gan["synthetic"] == 8 and set(gan["gan_steps"]) <= {2, 4} and gan["agreement"] is not None
    section = saved["augment_section"]
    assert section["filter"]["chosen"]["threshold"] in (0.0, 0.9) and len(section["filter"]["tried"]) == 2
    assert section["lineage"]["generator"] == "tiny" and section["dataset"].startswith("synthetic/toy-news-lm@")
    assert set(saved["target"]) == {"augment_head_gain", "augment_distill_gain", "quick_seconds"}
    assert (work / "results" / "augment-generated.json").is_file()  # generations cached
    printed = console.export_text()
    assert "augment: toy-news" in printed and "target augment_distill_gain" in printed


def test_pgr_and_the_sections_setting(tmp_path) -> None:
    assert pgr(0.8, 0.6, 1.0) == pytest.approx(0.5) and pgr(0.8, 0.9, 0.9) is None
    with pytest.raises(ConfigError, match="--sections"):
        bench.run_bench(True, tmp_path / "u.json", Console(quiet=True), sections=("bogus",))
