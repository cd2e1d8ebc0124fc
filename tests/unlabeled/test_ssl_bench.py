"""The ssl section of ``fanbu bench unlabeled`` end to end on toy domains and a tiny encoder."""

from __future__ import annotations

import json
import random

import pytest
import torch
from rich.console import Console

import fanbu.bench.unlabeled as bench
from fanbu.bench.unlabeled.ssl import SSLBenchConfig
from fanbu.bench.unlabeled.ssl_report import chosen, summarise, targets
from fanbu.models import EncoderHandle

WORDS = {"space": "orbit rocket nasa launch moon", "med": "doctor patient disease drug clinic",
         "game": "team score match league coach", "law": "vote court senate bill judge"}


def _domain(path, labels, n=120, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            label = rng.choice(labels)
            words = rng.sample(WORDS[label].split(), 3) + [rng.choice(["the", "a", "and", "of"]) for _ in range(3)]
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")


@pytest.fixture
def toy_ssl(monkeypatch, tmp_path):
    _domain(tmp_path / "sci.jsonl", ["space", "med"])
    _domain(tmp_path / "misc.jsonl", ["game", "law"], seed=1)
    files = [{"name": n, "train": str(tmp_path / f"{n}.jsonl")} for n in ("sci", "misc")]
    settings = SSLBenchConfig.model_validate({
        "model": "tiny",
        "data": {"source": "files", "files": files, "max_train": 40, "max_validation": 20, "max_test": 30},
        "max_length": 16,
        "labels": [10, None],
        "ssl": {"steps": 4, "batch_size": 8},
        "finetune": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "progress": False},
    })
    monkeypatch.setattr(bench, "ssl_settings", lambda quick: settings)
    monkeypatch.setattr(bench, "load_base", lambda source, max_length: EncoderHandle.tiny(max_length=max_length))
    torch.set_num_threads(1)


def test_the_ssl_section_runs_end_to_end_and_reads_finished_seeds_back(toy_ssl, tmp_path):
    out, work = tmp_path / "unlabeled.json", tmp_path / "work"
    console = Console(record=True, width=200)
    report = bench.run_bench(True, out, console, seeds=2, work=work, sections=("ssl",))
    saved = json.loads(out.read_text())
    assert [(r["labels"], r["objective"]) for r in saved["ssl"]] == [
        (10, "mlm"), (10, "simcse"), ("full", "mlm"), ("full", "simcse")]
    for row in saved["ssl"]:
        assert {"setting", "labels", "with_ssl", "without_ssl"} <= set(row)
        assert row["gain"] == pytest.approx(row["with_ssl"] - row["without_ssl"])
        assert set(row["gain_by_domain"]) == {"sci", "misc"} and row["gain_interval"] is not None
    run = saved["ssl_section"]["runs"][0]
    assert {r["labelled"] for r in run["rows"]} == {10, 40} and {r["pool"] for r in run["rows"]} == {40}
    assert set(saved["target"]) >= {"ssl_low_labels", "ssl_full_labels", "quick_seconds"}
    assert saved["target"]["ssl_low_labels"]["objective"] == saved["ssl_section"]["chosen"]["10"]
    assert "self-supervised pretraining" in console.export_text()
    again = bench.run_bench(True, out, Console(quiet=True), seeds=2, work=work, sections=("ssl",))
    assert again["ssl"] == report["ssl"]  # both seeds read back from the work directory


def _run(values):
    """A seed's rows: values[(labels, key)] = (validation_acc, test_acc) for one domain."""
    rows = {}
    for (labels, key), (val, test) in values.items():
        rows.setdefault(labels, {"domain": "d", "labels": labels, "scores": {}})["scores"][key] = {
            "validation_acc": val, "test_acc": test}
    return {"rows": list(rows.values())}


def test_the_headline_objective_is_chosen_on_validation_not_test():
    # mlm wins on test, simcse on validation: simcse is the headline, and its test gain is what is read
    runs = [_run({(100, "none"): (0.5, 0.5), (100, "mlm"): (0.5, 0.7), (100, "simcse"): (0.6, 0.52)})] * 2
    rows = summarise(runs, ["mlm", "simcse"])
    assert chosen(rows) == {"100": "simcse"}
    met = targets(rows, 100)["ssl_low_labels"]
    assert met["objective"] == "simcse" and met["value"] == pytest.approx(0.02) and met["met"]


def test_more_labels_than_the_slice_holds_is_refused(toy_ssl, tmp_path):
    settings = bench.ssl_settings(True).model_copy(update={"labels": [500]})
    from fanbu.bench.unlabeled.ssl import run_domain
    from fanbu.errors import ConfigError

    with pytest.raises(ConfigError, match="lower labels or raise data.max_train"):
        run_domain(settings, 0, "sci", bench.load_base, tmp_path)
