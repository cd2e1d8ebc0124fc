"""``fanbu bench feedback`` end to end on a tiny fake setup (tiny models, keyword data): the JSON's shape."""

from __future__ import annotations

import copy
import io
import json
import random
import statistics

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import feedback as bench
from fanbu.cli import app
from fanbu.feedback import STRATEGIES
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig

WORDS = {
    "sport": [["goal", "match", "team"], ["race", "lap", "car"]],
    "money": [["bank", "loan", "rate"], ["stock", "share", "market"]],
    "mood": [["happy", "great", "good"], ["sad", "bad", "awful"]],
}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "on"]


def _texts(task: str, n: int, seed: int, words: int = 3) -> tuple[list[str], list[int]]:
    rng = random.Random(f"{task}-{seed}")
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        tokens = rng.sample(WORDS[task][label][:words], 1) + rng.sample(FILLER, 3)
        rng.shuffle(tokens)
        texts.append(" ".join(tokens))
        labels.append(label)
    return texts, labels


def tiny_setup(quick: bool, console: Console, store: object = None, seed: int = 0) -> bench.BenchSetup:
    """Large v0 knows one keyword per class; experts learn all three on their domain."""
    torch.manual_seed(0)
    large = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    for task in WORDS:
        large.add_head(task, ["first", "second"])
    train = TrainConfig(epochs=6, batch_size=16, lr=3e-3, warmup_ratio=0.0, progress=False)
    train_heads(large, {t: _texts(t, 32, 0, words=1) for t in WORDS}, train)
    large.model.eval()
    experts = {}
    for domain in ("sport", "money"):
        expert = copy.deepcopy(large)
        train_heads(expert, {domain: _texts(domain, 64, 1)}, train)
        expert.model.eval()
        experts[domain] = expert
    public = {d: _texts(d, 24, 2, words=1) for d in experts}
    validation = {d: _texts(d, 24, 3) for d in experts}
    tests = {t: _texts(t, 40, 4) for t in WORDS}
    unlabeled = _texts("sport", 16, 5)[0]
    return bench.BenchSetup(large, experts, public, validation, tests, ["mood"], unlabeled, seed=seed)


def test_bench_runs_every_strategy_and_both_baselines(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "build_setup", tiny_setup)
    monkeypatch.setattr(
        bench,
        "bench_config",
        lambda name, settings, quick: _tiny_config(name, settings),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster so on a shared CPU
    out = tmp_path / "bench.json"
    try:
        result = CliRunner().invoke(app, ["bench", "feedback", "--quick", "--seed", "2", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["seeds"] == [2] and len(report["runs"]) == 1  # the quick default: one draw
    draw = report["runs"][0]
    names = [r["name"] for r in report["strategies"]]
    pruned_only = {e.name for e in STRATEGIES.with_capability("pruned_experts")}  # they run in bench loop
    assert pruned_only >= {"transplant", "swarm_structure"}
    assert names == sorted(
        n for n in STRATEGIES if n != "sequential" and n not in pruned_only and n not in bench.OWN_BENCH
    )
    assert [r["name"] for r in report["baselines"]] == ["sequential", "merge:average"]
    for row in draw["strategies"] + draw["baselines"]:
        assert {"name", "pgr_mean", "forgetting", "seconds", "domains"} <= set(row)
        assert "error" not in row, row  # every strategy runs on a same-architecture swarm
        assert [d["name"] for d in row["domains"]] == ["money", "sport"]
        assert all({"name", "acc", "pgr"} <= set(d) for d in row["domains"])
        assert all(0.0 <= d["acc"] <= 1.0 for d in row["domains"])
        spread = row["interval"]  # paired bootstrap over the test texts
        assert set(spread["domains"]) == {"money", "sport"} and spread["level"] == 0.9
        if row["pgr_mean"] is not None and spread["pgr_mean"] is not None:
            assert spread["pgr_mean"][0] <= row["pgr_mean"] <= spread["pgr_mean"][1]
        assert spread["forgetting"][0] <= row["forgetting"] <= spread["forgetting"][1]
    assert report["heldout"] == ["mood"] and report["quick"] is True
    assert report["seed"] == 2 and "--seed 2 --seeds 1" in report["command"]
    assert set(report["target"]) == {"best", "pgr_mean", "forgetting", "beats_baselines", "met"}
    best = next(r for r in report["strategies"] if r["name"] == report["best"])
    assert report["target"]["beats_baselines"]["met"] == bench.beats_baselines(best, report["baselines"])
    assert report["target"]["pgr_mean"]["interval"] is None  # one draw: no interval over seeds
    assert "PGR mean" in result.output and "merge:average" in result.output


def test_a_rerun_with_the_same_work_directory_reuses_finished_scores(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "build_setup", tiny_setup)
    monkeypatch.setattr(bench, "bench_config", lambda name, settings, quick: _tiny_config(name, settings))
    monkeypatch.setattr(bench, "STRATEGIES", {n: STRATEGIES[n] for n in ("merge", "graft")})
    monkeypatch.setattr(bench, "BASELINES", bench.BASELINES[1:])
    console = Console(file=io.StringIO(), width=200)
    work = tmp_path / "work"
    first = bench.run_bench(True, tmp_path / "a.json", console, work=work)
    assert (work / "results" / "merge.json").is_file() and (work / "results" / "champion.json").is_file()

    calls: list[str] = []
    run_one = bench.run_one
    monkeypatch.setattr(
        bench, "run_one", lambda setup, label, *a: calls.append(label) or run_one(setup, label, *a)
    )
    again = bench.run_bench(True, tmp_path / "b.json", console, work=work)
    assert calls == []  # nothing ran again
    assert [r["pgr_mean"] for r in again["strategies"]] == [r["pgr_mean"] for r in first["strategies"]]
    monkeypatch.setitem(bench.SETTINGS, "merge", {"method": "average"})
    bench.run_bench(True, tmp_path / "c.json", console, work=work)
    assert calls == ["merge"]  # its settings changed; graft's did not
    bench.run_bench(True, tmp_path / "d.json", console, work=work, seed=3)
    assert calls == ["merge", "graft", "merge", "merge:average"]  # another draw of the setup: all again


def _tiny_config(name: str, settings: dict):
    """The bench's settings with a tiny model's loop: one epoch at a high learning rate."""
    config = STRATEGIES[name].config.model_validate(settings)
    if isinstance(getattr(config, "train", None), TrainConfig):
        tiny = TrainConfig(epochs=1, batch_size=16, lr=3e-3, warmup_ratio=0.0, progress=False)
        config = config.model_copy(update={"train": tiny})
    return config


def test_table_marks_errors_and_the_best() -> None:
    row = {
        "name": "merge",
        "pgr_mean": 0.9,
        "forgetting": 0.5,
        "seconds": 2.0,
        "domains": [{"name": "comp", "acc": 0.8, "pgr": 0.9}],
        "interval": {"pgr_mean": [0.7, 1.1], "forgetting": [-0.2, 1.4]},
    }
    failed = {
        "name": "moe",
        "pgr_mean": None,
        "forgetting": None,
        "seconds": 0.0,
        "domains": [],
        "error": "x",
    }
    report = {"quick": True, "seconds": 3.0, "strategies": [row, failed], "baselines": [], "best": "merge"}
    text = io.StringIO()
    bench.print_table(report, Console(file=text, width=200))
    assert "0.800 (0.900)" in text.getvalue() and "error" in text.getvalue()
    assert "0.900 [0.700, 1.100]" in text.getvalue() and "+0.5 [-0.2, +1.4]" in text.getvalue()
    assert "[brackets]: 90% paired-bootstrap interval" in text.getvalue()


def test_beating_the_baselines_takes_more_pgr_and_less_forgetting_than_each() -> None:
    baselines = [
        {"name": "sequential", "pgr_mean": 0.7, "forgetting": 3.0},
        {"name": "merge:average", "pgr_mean": 0.8, "forgetting": 1.2},
        {"name": "failed", "pgr_mean": None, "forgetting": None},
    ]
    assert bench.beats_baselines({"pgr_mean": 0.9, "forgetting": 0.3}, baselines)
    assert not bench.beats_baselines(
        {"pgr_mean": 0.9, "forgetting": 1.5}, baselines
    )  # more than the average's
    assert not bench.beats_baselines({"pgr_mean": 0.75, "forgetting": 0.3}, baselines)


def test_outside_texts_are_the_other_domains_training_texts_without_cross_posts() -> None:
    from fanbu.data.domain import Benchmark, Domain, Split

    def domain(name: str, train: list[str], test: list[str]) -> Domain:
        labels = [i % 2 for i in range(len(train))]
        return Domain(
            name=name,
            task="classification",
            train=Split(tuple(train), tuple(labels)),
            validation=Split((f"{name} val 0", f"{name} val 1"), (0, 1)),
            test=Split(tuple(test), tuple(i % 2 for i in range(len(test)))),
            label_names=("x", "y"),
        )

    ours = domain("ours", [f"ours {i}" for i in range(10)] + ["cross-post"], ["ours test", "posted later"])
    other = domain(
        "other", [f"other {i}" for i in range(10)] + ["cross-post", "posted later", "other 0"], ["t", "u"]
    )
    held = domain("held", ["h 0", "h 1", "h 2"], ["h test", "h test 2"])
    bench_data = Benchmark((ours, other), (held,), public_fraction=0.3, seed=0)
    texts = bench.outside_texts(bench_data, ["ours"])
    assert sorted(texts) == sorted(f"other {i}" for i in range(10))  # each once; no text of "ours"
    assert bench.outside_texts(bench_data, ["ours", "other"]) == []  # held-out tasks never join


def seeded_setup(quick: bool, console: Console, store: object = None, seed: int = 0) -> bench.BenchSetup:
    """:func:`tiny_setup` whose test texts are drawn anew for each seed, so that the draws differ."""
    setup = tiny_setup(quick, console, store, seed)
    setup.tests = {t: _texts(t, 40, 10 + seed, words=2 + seed % 2) for t in WORDS}
    return setup


def test_seeds_run_one_draw_per_seed_and_report_the_mean_with_a_t_interval(tmp_path, monkeypatch) -> None:
    from fanbu.bench.stats import seed_interval

    monkeypatch.setattr(bench, "build_setup", seeded_setup)
    monkeypatch.setattr(bench, "bench_config", lambda name, settings, quick: _tiny_config(name, settings))
    monkeypatch.setattr(bench, "STRATEGIES", {n: STRATEGIES[n] for n in ("merge", "graft")})
    monkeypatch.setattr(bench, "BASELINES", bench.BASELINES[1:])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    try:
        args = ["bench", "feedback", "--quick", "--seed", "1", "--seeds", "3", "--out", str(out)]
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["seeds"] == [1, 2, 3] and [r["seed"] for r in report["runs"]] == [1, 2, 3]  # --seed: the first
    assert report["seed"] == 1 and "--seed 1 --seeds 3" in report["command"]
    for kind in ("strategies", "baselines"):
        for index, row in enumerate(report[kind]):
            draws = [run[kind][index] for run in report["runs"]]
            assert all(d["name"] == row["name"] for d in draws)
            for key in ("pgr_mean", "forgetting"):
                values = [d[key] for d in draws]
                assert row[key] == pytest.approx(statistics.fmean(values))
                assert row["seed_interval"][key] == pytest.approx(seed_interval(values))
                assert [s[key] for s in row["per_seed"]] == values
                # each draw keeps its own paired-bootstrap interval over its test texts
                assert [s["interval"][key] for s in row["per_seed"]] == [d["interval"][key] for d in draws]
            assert row["gate"]["pgr_mean"] == pytest.approx(statistics.fmean(d["gate"]["pgr_mean"] for d in draws))
    spread = [s["pgr_mean"] for s in report["strategies"][0]["per_seed"]]
    assert len(set(spread)) > 1  # the draws differ, so the interval has a width
    # the best: chosen on the mean gate scores over the draws; the target: read on the means
    best = max(report["strategies"], key=bench.gate_key)
    assert report["best"] == best["name"] == report["target"]["best"]
    target = report["target"]
    assert target["pgr_mean"]["value"] == best["pgr_mean"]
    assert target["pgr_mean"]["interval"] == best["seed_interval"]["pgr_mean"]
    assert target["forgetting"]["interval"] == best["seed_interval"]["forgetting"]
    assert target["beats_baselines"]["met"] == bench.beats_baselines(best, report["baselines"])
    assert target["met"] == (
        best["pgr_mean"] >= bench.TARGET_PGR
        and best["forgetting"] <= bench.TARGET_FORGETTING
        and target["beats_baselines"]["met"]
    )
    assert "mean over 3 draws" in result.output and "t-interval over seeds" in result.output
    assert "target pgr_mean" in result.output


def _draw(seed: int, rows: dict[str, tuple[float, float, float]], baseline: tuple[float, float]) -> dict:
    """A draw's report: per strategy (test PGR, forgetting, gate PGR), one baseline (PGR, forgetting)."""

    def row(name: str, pgr: float, forgetting: float, gate: float | None) -> dict:
        return {
            "name": name,
            "pgr_mean": pgr,
            "forgetting": forgetting,
            "seconds": 1.0,
            "domains": [{"name": "comp", "acc": 0.8, "pgr": pgr}],
            "interval": {"pgr_mean": [pgr - 0.1, pgr + 0.1], "forgetting": [forgetting - 1, forgetting + 1]},
            "gate": None if gate is None else {"pgr_mean": gate, "forgetting": 0.0, "mean_acc": 0.8},
        }

    return {
        "seed": seed,
        "quick": True,
        "strategies": [row(n, *v) for n, v in rows.items()],
        "baselines": [row("merge:average", *baseline, None)],
        "champion": {"comp": 0.7, "bbc": 0.9},
        "expert_acc": {"comp": 0.85},
        "heldout": ["bbc"],
        "seconds": 1.0,
    }


def test_the_target_and_the_best_are_read_on_the_means_over_seeds() -> None:
    from fanbu.bench.stats import seed_interval

    draws = [
        # swarm: below the bar on seed 0, above on seed 1; its gate PGR is the best on average only
        _draw(0, {"swarm": (0.85, 0.5, 0.9), "merge": (0.95, 0.2, 0.5)}, (0.6, 2.0)),
        _draw(1, {"swarm": (0.99, 0.9, 0.3), "merge": (0.50, 0.2, 0.6)}, (0.7, 3.0)),
    ]
    report = bench.summarise(draws)
    assert report["best"] == "swarm"  # mean gate PGR 0.6 against 0.55, though merge wins seed 1's gate
    assert bench.choose_best(draws[1]["strategies"])["name"] == "merge"
    target = report["target"]
    assert target["pgr_mean"]["value"] == pytest.approx(0.92) and target["pgr_mean"]["met"]  # on the mean
    assert target["pgr_mean"]["interval"] == pytest.approx(seed_interval([0.85, 0.99]))
    assert target["forgetting"]["value"] == pytest.approx(0.7) and target["forgetting"]["met"]
    assert target["beats_baselines"]["met"] and target["met"]
    assert target["beats_baselines"]["baselines"]["merge:average"]["pgr_mean"] == pytest.approx(0.65)
    assert report["champion"] == {"comp": pytest.approx(0.7), "bbc": pytest.approx(0.9)}
    assert report["runs"] == draws and report["interval_method"].startswith("90% Student-t")
    text = io.StringIO()
    console = Console(file=text, width=300)
    bench.print_seeds_table({**report, "quick": True, "seconds": 2.0}, console)
    bench.print_targets(report, console)
    lo, hi = seed_interval([0.85, 0.99])
    assert f"0.920 [{lo:.3f}, {hi:.3f}]" in text.getvalue()  # the mean [t-interval over seeds]
    assert "0.850 [0.750, 0.950]; 0.990 [0.890, 1.090]" in text.getvalue()  # each draw [bootstrap]
    assert f"target pgr_mean: 0.920 [{lo:.3f}, {hi:.3f}]" in text.getvalue() and "met" in text.getvalue()

    # a strategy that failed on any draw is never the best, however its other draws went
    failed = copy.deepcopy(draws)
    failed[1]["strategies"][0] = {**failed[1]["strategies"][0], "error": "refused", "gate": None}
    again = bench.summarise(failed)
    assert again["best"] == "merge" and "seed 1: refused" in again["strategies"][0]["error"]
    # one draw: the mean is that draw's number, no interval over seeds
    single = bench.summarise(draws[:1])
    assert single["target"]["pgr_mean"]["value"] == 0.85 and single["target"]["pgr_mean"]["interval"] is None
    assert not single["target"]["pgr_mean"]["met"] and not single["target"]["met"]


def test_the_full_bench_scores_every_test_text_and_the_quick_one_caps_them(monkeypatch) -> None:
    from fanbu.data import builtin
    from fanbu.data.domain import Benchmark, Domain, Split

    def domain(name: str, tests: int) -> Domain:
        def split(kind: str, n: int) -> Split:
            return Split(tuple(f"{name} {kind} {i}" for i in range(n)), tuple(i % 2 for i in range(n)))

        return Domain(
            name=name,
            task="classification",
            train=split("train", 120),
            validation=split("val", 40),
            test=split("test", tests),
            label_names=("x", "y"),
        )

    sizes = {"comp": 620, "sci": 540, "politics": 700, "rec": 510}
    made = Benchmark(tuple(domain(n, k) for n, k in sizes.items()), (domain("bbc", 530),), 0.1, 0)
    monkeypatch.setattr(builtin, "default_benchmark", lambda seed, public_fraction: made)
    tiny = EncoderHandle.tiny(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    monkeypatch.setattr(bench.EncoderHandle, "from_source", lambda *a, **k: copy.deepcopy(tiny))
    monkeypatch.setattr(bench, "train_large_v0", lambda *a, **k: None)
    monkeypatch.setattr(bench, "train_heads", lambda *a, **k: None)
    console = Console(file=io.StringIO())
    assert bench._caps(False)["test"] is None and bench._caps(True)["test"] == 500
    full = bench.build_setup(False, console)
    assert {t: len(v[0]) for t, v in full.tests.items()} == {**sizes, "bbc": 530}  # every test text
    quick = bench.build_setup(True, console)
    assert {t: len(v[0]) for t, v in quick.tests.items()} == {"comp": 500, "sci": 500, "politics": 500, "bbc": 500}
    assert bench.default_seeds(True) == 1 and bench.default_seeds(False) >= 3
