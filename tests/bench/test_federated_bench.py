"""``fanbu bench federated``: the targets' logic, the rule x attack grid, the fingerprinted cache of
finished parts, seeds, the pooled data, memory."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import federated as bench
from fanbu.bench.results import fmt, render_bench
from fanbu.bench.stats import seed_interval
from fanbu.cli import app
from fanbu.federated.data import benchmark, slots_of


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory: pytest.TempPathFactory) -> bench.Bench:
    return bench.Bench(True, tmp_path_factory.mktemp("fedbench"), _console())


SCALE = {"clients": 100, "seconds_per_round": 9.0, "peak_mb": 1000.0, "rounds": 2, "share": "lora"}


def _part(acc: float) -> dict:
    return {"acc": acc, "domains": {}}


def _row(attack: str, rule: str, acc: float, clean: float) -> dict:
    return {"attack": attack, "rule": rule, "fraction": 0.2, "acc": acc, "clean_acc": clean}


def _grid(drops: dict[str, dict[str, float]], clean: float = 0.80) -> list[dict]:
    """Every rule of the grid against every attack on shared parameters; ``drops[attack][rule]``
    (default 0), then garbage logits against FedMKT's mean and median."""
    rows = [
        _row(attack, rule, clean - drops.get(attack, {}).get(rule, 0.0), clean)
        for rule in bench.RULES
        for attack in bench.ATTACKS
    ]
    return [*rows, _row("garbage_logits", "fedmkt:fedavg", 0.70, 0.78), _row("garbage_logits", "fedmkt:median", 0.77, 0.78)]


def _biting(default_drop: float = 0.01) -> dict[str, dict[str, float]]:
    """FedAvg loses 10 points under every attack; every robust rule (the default included) ``default_drop``."""
    return {a: {"fedavg": 0.10, **{r: default_drop for r in bench.RULES if r != "fedavg"}} for a in bench.ATTACKS}


def _run(attacks: list[dict], seed: int = 0, fed: float = 0.78, central: float = 0.8,
         before: float = 0.5, after: float = 0.6, local: float = 0.55) -> dict[str, Any]:
    return {
        "seed": seed,
        "v0": _part(0.6),
        "central": {**_part(central), "lr": 1e-4},
        "fed": {"per_domain": {**_part(fed), "server_lr": 2.0}, "dirichlet": _part(0.7), "plain": _part(0.72)},
        "mkt": {"clients_before": before, "clients_after": after, "clients_local_only": local},
        "attacks": attacks,
    }


def _report(quick_bench: bench.Bench, runs: list[dict]) -> dict:
    report = bench.summarise(quick_bench, True, Path("out.json"), runs, SCALE, 1.0)
    bench.print_table(report, quick_bench.console)  # every report prints
    json.dumps(report)  # and is JSON
    return report


def _cell(report: dict, attack: str, rule: str) -> dict:
    return next(r for r in report["attacks"] if (r["attack"], r["rule"]) == (attack, rule))


def test_headline_targets_follow_the_measurements(quick_bench: bench.Bench) -> None:
    report = _report(quick_bench, [_run(_grid(_biting()), fed=0.777)])
    target = report["target"]
    assert set(target) == {"fed_ratio", "clients_beat_local", "attacks_bite", "robust_default", "scale_completed"}
    for t in target.values():
        assert {"value", "bar", "met", "interval", "rule"} <= set(t)
    assert target["fed_ratio"]["value"] == pytest.approx(0.777 / 0.8)
    assert target["fed_ratio"]["met"] is True  # 0.971 >= 0.97
    assert target["scale_completed"]["met"] is True
    assert report["central_acc"] == 0.8 and report["fed_acc"] == 0.777
    assert report["fed_plain_acc"] == 0.72 and report["server_lr"] == [2.0] and report["central_lr"] == [1e-4]
    assert report["plain_ratio"] == pytest.approx(0.9) and report["dirichlet_ratio"] == pytest.approx(0.875)
    assert report["command"] == "fanbu bench federated --quick --out out.json"
    assert report["seeds"] == [0] and report["interval"]["fed_acc"] is None
    short = _report(quick_bench, [_run(_grid(_biting()), fed=0.70)])["target"]
    assert short["fed_ratio"]["met"] is False


def test_the_json_holds_every_rule_against_every_attack(quick_bench: bench.Bench) -> None:
    report = _report(quick_bench, [_run(_grid(_biting()))])
    assert bench.caps(True)["grid"]["rules"] == bench.RULES  # Krum, Multi-Krum and Bulyan in the quick grid
    cells = {(r["attack"], r["rule"]) for r in report["attacks"]}
    assert {(a, r) for a in bench.ATTACKS for r in bench.RULES} <= cells
    assert ("garbage_logits", "fedmkt:median") in cells
    for row in report["attacks"]:
        assert {"attack", "rule", "fraction", "acc", "clean_acc", "drop", "status", "default"} <= set(row)
        assert row["drop"] == pytest.approx(row["clean_acc"] - row["acc"])
    assert _cell(report, "sign_flip", "fedavg")["status"] == "broken"
    assert _cell(report, "sign_flip", "bulyan")["status"] == "held"
    assert _cell(report, "sign_flip", "median")["default"] is True
    assert _cell(report, "sign_flip", "krum")["default"] is False
    assert report["attacks_held_by"]["label_flip"] == [r for r in bench.RULES if r != "fedavg"]
    assert report["attacks_status"]["scaled_replacement"]["fedavg"] == "broken"
    assert report["default_rule"] == bench.DEFAULT_RULE
    assert report["attack_strengths"]["sign_flip"]["scale"] >= 4  # reverses FedAvg's step at 20% attackers


def test_an_attack_that_does_not_hurt_fedavg_is_no_effect_and_not_held(quick_bench: bench.Bench) -> None:
    drops = _biting()
    drops["label_flip"]["fedavg"] = 0.01  # FedAvg loses 1 point: the attack tests nothing
    report = _report(quick_bench, [_run(_grid(drops))])
    for rule in bench.RULES:
        assert _cell(report, "label_flip", rule)["status"] == "no effect"
    assert report["attacks_held_by"]["label_flip"] == []
    target = report["target"]
    assert target["attacks_bite"]["met"] is False
    assert target["attacks_bite"]["value"] == pytest.approx(0.01)
    assert target["attacks_bite"]["per_attack"]["sign_flip"] == pytest.approx(0.10)
    assert target["robust_default"]["per_attack"]["label_flip"] == "no effect"
    assert target["robust_default"]["met"] is False  # held elsewhere, but "no effect" is not held
    garbage = _cell(report, "garbage_logits", "fedmkt:median")
    assert garbage["status"] == "held" and garbage["baseline_drop"] == pytest.approx(0.08)


def test_the_target_is_the_default_rule_not_any_rule(quick_bench: bench.Bench) -> None:
    held = _report(quick_bench, [_run(_grid(_biting(default_drop=0.04)))])["target"]["robust_default"]
    assert held["met"] is True and held["default_rule"] == bench.DEFAULT_RULE
    assert held["value"] == pytest.approx(0.04) and held["bar"] == pytest.approx(0.05)
    assert held["per_attack"] == {a: "held" for a in bench.ATTACKS}

    drops = _biting()
    drops["sign_flip"][bench.DEFAULT_RULE] = 0.20  # Krum and the rest hold it; the default rule does not
    report = _report(quick_bench, [_run(_grid(drops))])
    target = report["target"]["robust_default"]
    assert "krum" in report["attacks_held_by"]["sign_flip"]
    assert bench.DEFAULT_RULE not in report["attacks_held_by"]["sign_flip"]
    assert target["met"] is False and target["value"] == pytest.approx(0.20)
    assert target["per_attack"]["sign_flip"] == "broken"
    assert report["target"]["attacks_bite"]["met"] is True

    missing = [r for r in _grid(_biting()) if not (r["attack"] == "label_flip" and r["rule"] == bench.DEFAULT_RULE)]
    assert _report(quick_bench, [_run(missing)])["target"]["robust_default"]["met"] is False


def test_clients_must_beat_the_local_only_control(quick_bench: bench.Bench) -> None:
    grid = _grid(_biting())
    # above their start but below the same clients trained alone: improved, yet the target is short
    report = _report(quick_bench, [_run(grid, before=0.748, after=0.755, local=0.762)])
    assert report["clients_improve"] is True
    beat = report["target"]["clients_beat_local"]
    assert beat["met"] is False and beat["value"] == pytest.approx(0.755 - 0.762) and beat["bar"] == 0.0
    assert report["clients_gain"] == pytest.approx(0.007)
    beat = _report(quick_bench, [_run(grid, before=0.748, after=0.770, local=0.762)])["target"]["clients_beat_local"]
    assert beat["met"] is True


def test_seeds_are_averaged_with_a_t_interval_and_targets_read_the_mean(quick_bench: bench.Bench) -> None:
    first, second = _biting(), _biting()
    first["sign_flip"][bench.DEFAULT_RULE] = 0.02
    second["sign_flip"][bench.DEFAULT_RULE] = 0.06  # one seed over the bar; the mean (0.04) under it
    runs = [
        _run(_grid(first), seed=0, fed=0.78, after=0.56, local=0.55),
        _run(_grid(second), seed=1, fed=0.80, after=0.55, local=0.54),
    ]
    report = _report(quick_bench, runs)
    assert report["seeds"] == [0, 1]
    assert report["command"] == "fanbu bench federated --quick --seeds 2 --out out.json"
    assert report["fed_acc"] == pytest.approx(0.79)
    assert report["interval"]["fed_acc"] == pytest.approx(seed_interval([0.78, 0.80]))
    assert report["target"]["fed_ratio"]["interval"] == pytest.approx(seed_interval([0.78 / 0.8, 0.80 / 0.8]))
    cell = _cell(report, "sign_flip", bench.DEFAULT_RULE)
    assert cell["drop"] == pytest.approx(0.04) and cell["drops"] == pytest.approx([0.02, 0.06])
    assert cell["drop_interval"] == pytest.approx(seed_interval([0.02, 0.06]))
    target = report["target"]["robust_default"]
    assert target["met"] is True and target["value"] == pytest.approx(0.04)
    assert target["interval"] == pytest.approx(seed_interval([0.02, 0.06]))
    assert report["target"]["clients_beat_local"]["value"] == pytest.approx(0.01)
    assert len(report["details"]["runs"]) == 2


def test_results_md_shows_the_intervals_over_seeds_and_every_cell_of_the_grid(quick_bench: bench.Bench) -> None:
    runs = [_run(_grid(_biting()), seed=0, fed=0.78), _run(_grid(_biting()), seed=1, fed=0.80)]
    report = json.loads(json.dumps(_report(quick_bench, runs)))  # as RESULTS.md reads it back
    text = "\n".join(render_bench("federated", report, None))
    lo, hi = seed_interval([0.78, 0.80])
    assert f"| fed_acc | {fmt(0.79)} | [{fmt(lo)}, {fmt(hi)}] |" in text  # the mean and its t-interval
    lines = text.splitlines()
    for row in report["attacks"]:  # a row per rule x attack, with its drop and the drop's interval beside it
        line = next(x for x in lines if x.startswith(f"| {row['name']} | "))
        assert f"| {fmt(row['drop'])} {fmt(row['drop_interval'])} |" in line
    assert "| robust_default |" in text and "| attacks_bite |" in text


def test_run_bench_runs_every_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def run_seed(b: bench.Bench) -> dict:
        seen.append(b.seed)
        return _run(_grid(_biting()), seed=b.seed, fed=0.78 + 0.01 * b.seed)

    monkeypatch.setattr(bench, "run_seed", run_seed)
    monkeypatch.setattr(bench.Bench, "scale", lambda self: SCALE)
    out = tmp_path / "out.json"
    report = bench.run_bench(True, out, _console(), work=tmp_path / "work", seeds=3)
    assert seen == [0, 1, 2] and report["seeds"] == [0, 1, 2]
    assert json.loads(out.read_text())["fed_acc"] == pytest.approx(0.79)
    with pytest.raises(ValueError, match="seeds"):
        bench.run_bench(True, out, _console(), work=tmp_path / "work", seeds=0)


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


def test_a_kept_part_is_made_again_when_its_settings_or_code_change(tmp_path: Path) -> None:
    made = []

    def make() -> dict:
        made.append(1)
        return {"acc": 0.5}

    def cached(b: bench.Bench, **kwargs: Any) -> dict:
        return b.cached("grid-sign_flip-median", make, **kwargs)

    cached(bench.Bench(True, tmp_path, _console()))
    cached(bench.Bench(True, tmp_path, _console()))
    assert len(made) == 1

    stronger = bench.Bench(True, tmp_path, _console())
    stronger.caps["attacks"]["sign_flip"]["scale"] = 4.0  # another attack strength
    cached(stronger)
    assert len(made) == 2

    plain = bench.Bench(True, tmp_path, _console())
    plain.__dict__["code"] = "another-source"  # fanbu's code changed since the part was kept
    cached(plain)
    assert len(made) == 3

    b = bench.Bench(True, tmp_path, _console())
    recipe = b.grid_recipe(attack=b.attack_settings("sign_flip"), robust={"rule": "median"})
    cached(b, recipe=recipe)  # the part's recipe is part of its settings
    cached(b, recipe=recipe)
    assert len(made) == 4
    cached(b, recipe=b.grid_recipe(attack=b.attack_settings("label_flip"), robust={"rule": "median"}))
    assert len(made) == 5

    other_seed = bench.Bench(True, tmp_path, _console(), seed=1)
    cached(other_seed)  # another seed is another part, kept beside seed 0's
    assert len(made) == 6
    assert (tmp_path / "results" / "grid-sign_flip-median-seed1.json").is_file()
    fingerprint = json.loads((tmp_path / "results" / "grid-sign_flip-median.json").read_text())["fingerprint"]
    assert fingerprint and fingerprint != json.loads(
        (tmp_path / "results" / "grid-sign_flip-median-seed1.json").read_text())["fingerprint"]


def test_kept_models_carry_their_settings_and_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large v0 is kept with its training settings, the seed and the fingerprint of the code it depends on."""
    seen: list[tuple[str, dict]] = []

    def model(name: str, make: Any, max_length: int, settings: dict) -> str:
        seen.append((name, settings))
        return "handle"

    quick = bench.Bench(True, tmp_path, _console())
    monkeypatch.setattr(quick.store, "model", model)
    assert quick.large_v0() == "handle"
    name, settings = seen[-1]
    assert name == "large-v0" and settings["code"] and settings["train"]["epochs"] == quick.caps["v0_epochs"]
    seeded = bench.Bench(True, tmp_path, _console(), seed=2)
    monkeypatch.setattr(seeded.store, "model", model)
    seeded.large_v0()
    assert seen[-1][0] == "large-v0-seed2" and seen[-1][1] != settings
    longer = bench.Bench(True, tmp_path, _console())
    longer.caps["v0_epochs"] += 1
    monkeypatch.setattr(longer.store, "model", model)
    longer.large_v0()
    assert seen[-1][1] != settings
    # every result's settings carry large v0's fingerprint: a remade v0 makes them again
    assert quick.part_settings("x")["large_v0"] != longer.part_settings("x")["large_v0"]


def test_attack_strengths_reach_the_recipe(quick_bench: bench.Bench) -> None:
    strengths = bench.caps(True)["attacks"]
    sign = quick_bench.grid_recipe(attack=quick_bench.attack_settings("sign_flip"), robust={"rule": "fedavg"})
    assert sign.attack.scale == strengths["sign_flip"]["scale"] and sign.attack.fraction == bench.FRACTION
    replace = quick_bench.grid_recipe(attack=quick_bench.attack_settings("scaled_replacement"))
    assert replace.attack.resolved_scale(15) == strengths["scaled_replacement"]["scale"] == 45.0
    full = bench.Bench(False, quick_bench.work, quick_bench.console)
    replace = full.grid_recipe(attack=full.attack_settings("scaled_replacement"))
    assert replace.attack.resolved_scale(15) == 15.0  # the full bench: model replacement by the number of clients
    assert full.caps["attacks"] == bench.ATTACK_STRENGTHS
    # quick mode boosts harder what one local step a round leaves too small to bite in 2 rounds
    assert bench.caps(True)["attacks"]["label_flip"]["scale"] > bench.ATTACK_STRENGTHS["label_flip"]["scale"]
    clean = quick_bench.grid_recipe(attack=quick_bench.attack_settings("none"))
    assert clean.attack.kind == "none" and clean.attack.fraction == 0.0
    # several rounds: a reversed step compounds (quick: 2, measured to bite; the full bench 3)
    assert quick_bench.grid_recipe().rounds >= 2 and bench.caps(False)["grid"]["rounds"] >= 3


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
    quick_bench.check_grid()
    for rule in quick_bench.caps["grid"]["rules"]:
        recipe = quick_bench.grid_recipe(
            attack=quick_bench.attack_settings("sign_flip"),
            robust={"rule": rule, "num_malicious": quick_bench.attackers()},
        )
        recipe.check_clients(len(quick_bench.domains))
        assert recipe.rounds == bench.caps(True)["grid"]["rounds"] and not recipe.save_clients


def test_a_grid_too_small_for_bulyan_is_refused(tmp_path: Path) -> None:
    small = bench.Bench(True, tmp_path, _console())
    small.caps["clients_per_domain"] = 4  # 12 clients, 2 attackers: Bulyan needs 11, fine; at 3 per domain not
    small.check_grid()
    small.caps["clients_per_domain"] = 3  # 9 clients, 2 attackers: Bulyan needs 4 * 2 + 3 = 11
    with pytest.raises(ValueError, match="bulyan"):
        small.check_grid()


def test_peak_memory_counts_this_process() -> None:
    with bench.PeakMemory(interval=0.01) as peak:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
    assert peak.mb > 64


def test_cli_lists_the_federated_bench() -> None:
    result = CliRunner().invoke(app, ["bench", "federated", "--help"])
    assert result.exit_code == 0
    assert "--work" in result.output and "--quick" in result.output and "--seeds" in result.output
