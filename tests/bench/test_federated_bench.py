"""``fanbu bench federated``: the targets' logic, the cache of finished parts, the pooled data, memory."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import federated as bench
from fanbu.cli import app
from fanbu.federated.data import benchmark, slots_of


def _console() -> Console:
    return Console(file=io.StringIO(), width=160)


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory: pytest.TempPathFactory) -> bench.Bench:
    return bench.Bench(True, tmp_path_factory.mktemp("fedbench"), _console())


def _part(acc: float) -> dict:
    return {"acc": acc, "domains": {}}


def _report(quick_bench: bench.Bench, fed: float, attacks: list[dict], before: float = 0.5, after: float = 0.6):
    mkt = {"clients_before": before, "clients_after": after, "clients_local_only": 0.55}
    scale = {"clients": 100, "seconds_per_round": 9.0, "peak_mb": 1000.0, "rounds": 2, "share": "lora"}
    return bench.summarise(
        quick_bench,
        True,
        Path("out.json"),
        _part(0.6),
        {**_part(0.8), "lr": 1e-4},
        {"per_domain": {**_part(fed), "server_lr": 2.0}, "dirichlet": _part(0.7), "plain": _part(0.72)},
        mkt,
        attacks,
        scale,
        1.0,
    )


def _row(attack: str, rule: str, acc: float, clean: float) -> dict:
    return {"attack": attack, "rule": rule, "fraction": 0.2, "acc": acc, "clean_acc": clean}


def test_targets_follow_the_measurements(quick_bench: bench.Bench) -> None:
    attacks = [
        _row("sign_flip", "fedavg", 0.80, 0.80),  # FedAvg never counts as the robust rule that held
        _row("sign_flip", "median", 0.60, 0.80),
        _row("sign_flip", "krum", 0.76, 0.80),
        _row("label_flip", "fedavg", 0.79, 0.80),
        _row("label_flip", "median", 0.70, 0.80),
    ]
    report = _report(quick_bench, 0.777, attacks)
    target = report["target"]
    assert target["fed_ratio"] == pytest.approx(0.777 / 0.8)
    assert target["fed_ratio_met"] is True  # 0.971 >= 0.97
    assert target["attacks_held"] == {"label_flip": False, "sign_flip": True}
    assert target["attacks_met"] is False
    assert target["clients_improve"] is True
    assert target["scale_completed"] is True
    assert report["central_acc"] == 0.8 and report["fed_acc"] == 0.777
    assert report["fed_plain_acc"] == 0.72 and report["server_lr"] == 2.0 and report["central_lr"] == 1e-4
    assert target["plain_ratio"] == pytest.approx(0.9) and target["dirichlet_ratio"] == pytest.approx(0.875)
    assert report["command"] == "fanbu bench federated --quick --out out.json"
    assert {"attack", "rule", "fraction", "acc", "clean_acc"} <= set(report["attacks"][0])

    short = _report(quick_bench, 0.70, attacks[:3], before=0.6, after=0.6)["target"]
    assert short["fed_ratio_met"] is False and short["clients_improve"] is False
    assert short["attacks_met"] is True


def test_finished_parts_are_read_back_not_rerun(tmp_path: Path) -> None:
    runs = []
    first = bench.Bench(True, tmp_path, _console())

    def make() -> dict:
        runs.append(first.run_dir("part"))
        assert runs[-1].is_dir() and runs[-1].parent == tmp_path / "runs"
        return {"acc": 0.5}

    assert first.cached("part", make)["acc"] == 0.5
    again = bench.Bench(True, tmp_path, _console()).cached("part", make)
    assert again["acc"] == 0.5 and "seconds" in again
    assert len(runs) == 1
    assert not runs[0].exists(), "a recorded part's run directory is removed"
    assert json.loads((tmp_path / "results" / "part.json").read_text())["acc"] == 0.5


def test_central_training_pools_exactly_the_clients_shards(quick_bench: bench.Bench) -> None:
    """The centralised baseline reads the same private examples as the Dirichlet split's clients."""
    recipe = quick_bench.recipe(partition=quick_bench.dirichlet(), server={"lr": 2.0})
    assert len(slots_of(recipe)) == 15
    pooled = quick_bench.private(recipe)
    per_domain = quick_bench.private(quick_bench.recipe())
    data = benchmark(recipe.data)
    for domain in quick_bench.domains:
        private = data.private(domain).subsample(bench.caps(True)["private"], recipe.data.seed)
        assert Counter(pooled[domain][0]) == Counter(private.texts)
        assert Counter(per_domain[domain][0]) == Counter(private.texts)
        assert Counter(pooled[domain][1]) == Counter(private.labels)


def test_attackers_fit_every_robust_rule(quick_bench: bench.Bench) -> None:
    """20% of the 15 Dirichlet clients are 3 attackers, which even Bulyan (4f + 3) tolerates."""
    assert quick_bench.attackers() == 3
    for rule in bench.RULES:
        recipe = quick_bench.grid_recipe(
            attack={"kind": "sign_flip", "fraction": bench.FRACTION},
            robust={"rule": rule, "num_malicious": quick_bench.attackers()},
        )
        recipe.check_clients(len(quick_bench.domains))
        assert recipe.rounds == bench.caps(True)["grid"]["rounds"] and not recipe.save_clients


def test_peak_memory_counts_this_process() -> None:
    with bench.PeakMemory(interval=0.01) as peak:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
    assert peak.mb > 64


def test_cli_lists_the_federated_bench() -> None:
    result = CliRunner().invoke(app, ["bench", "federated", "--help"])
    assert result.exit_code == 0
    assert "--work" in result.output and "--quick" in result.output
