"""``fanbu bench all`` with stand-in benches, and ``fanbu bench results`` on fake JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fanbu.bench import suite
from fanbu.bench.results import (
    BEGIN,
    END,
    MAX_ROWS,
    demo_targets,
    provenance,
    render,
    row_tables,
    target_rows,
    write_readme_block,
)
from fanbu.bench.suite import SuiteSettings, run_suite
from fanbu.cli import app

runner = CliRunner()

DERIVE = {
    "bench": "derive",
    "quick": True,
    "command": "fanbu bench derive --quick --seeds 2 --out DIR/derive.json",
    "mean": {"retention": 0.997, "param_ratio": 0.123, "speedup_b1": 7.4},
    "interval": {"retention": [0.99, 1.004], "param_ratio": None, "speedup_b1": [7.0, 7.8]},
    "domains": [
        {"name": "rec", "retention": 0.978, "scratch": {"steps": 3}},
        {"name": "comp", "retention": 1.02},
    ],
    "target": {
        "retention": {
            "value": 0.997,
            "bar": 0.98,
            "met": True,
            "interval": [0.99, 1.004],
            "rule": "acc ratio >= bar",
        },
        "speedup_b1": {"value": 7.4, "bar": 10.0, "met": False, "interval": None, "rule": "p50 ratio >= bar"},
    },
    "lm": {
        "mean": {"student_ppl": 1429.0, "teacher_ppl": 39.0},
        "domains": [{"name": "bbc-tech", "student_ppl": 1966.0}],
    },
    "seconds": 2212.3,
}
FEDERATED = {
    "command": "fanbu bench federated --quick --out DIR/federated.json",
    "fed_acc": 0.75,
    "central_acc": 0.78,
    "scale": {"clients": 100, "share": "1/100"},
    "target": {
        "fed_ratio": 0.96,
        "fed_ratio_met": True,
        "attacks_held": {"sign_flip": False, "noise": True},
        "clients_improve": True,
    },
    "seconds": 900.0,
}
SERVE = {
    "command": "fanbu bench serve --quick --domain rec --out DIR/serve.json",
    "over_seeds": {"figures": {"cascade.acc": {"mean": 0.93, "interval": None, "values": [0.93]}}},
    "target": {
        "lost_after_kill": {
            "value": 0,
            "bar": 0,
            "met": True,
            "interval": None,
            "rule": "none lost",
            "on": "equal_threads",
        }
    },
}
DEMO_SUMMARY = {
    "model": "large:v1",
    "seconds": 300.5,
    "test": {"comp": {"accuracy": 0.73, "macro_f1": 0.7, "n": 200}, "bbc-news": {"accuracy": 0.97, "n": 200}},
    "feedback_domains": ["comp"],
    "speed": {"latency_b1_p50_ms": 26.1, "params": 22.7e6},
    "small": [{"domain": "comp", "acc": 0.63, "p50_ms": 4.2}],
}


def _stand_in(report: dict[str, Any], calls: list[str], fail: bool = False):
    def run(settings: SuiteSettings, out: Path, console: Console) -> dict[str, Any]:
        calls.append(out.stem)
        if fail:
            raise RuntimeError("out of memory")
        out.write_text(json.dumps({**report, "seeds_asked": settings.seeds}))
        return report

    return run


@pytest.fixture
def stand_ins(monkeypatch):
    calls: list[str] = []
    runners = {
        "derive": _stand_in(DERIVE, calls),
        "feedback": _stand_in({}, calls, fail=True),
        "federated": _stand_in(FEDERATED, calls),
        "serve": _stand_in(SERVE, calls),
    }
    monkeypatch.setattr(suite, "RUNNERS", runners)
    return calls


def _demo(home: Path, console: Console) -> dict[str, Any]:
    assert not home.exists()  # a fresh registry home
    home.mkdir(parents=True)
    return DEMO_SUMMARY


def test_every_bench_runs_in_order_and_a_failure_is_recorded(tmp_path, stand_ins):
    (tmp_path / "feedback.json").write_text('{"stale": true}')  # an earlier run's file must not survive
    (tmp_path / "demo-home").mkdir()
    record = run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=2), Console(quiet=True), demo=_demo)
    assert stand_ins == ["derive", "feedback", "federated", "serve"]
    assert record["order"] == ["derive", "feedback", "federated", "serve", "demo"]
    assert record["failed"] == ["feedback"]
    assert record["benches"]["feedback"]["error"] == "RuntimeError: out of memory"
    assert not (tmp_path / "feedback.json").exists()
    assert json.loads((tmp_path / "derive.json").read_text())["seeds_asked"] == 2
    assert (
        record["benches"]["derive"]["command"]
        == f"fanbu bench derive --quick --seeds 2 --work {tmp_path}/work/derive --out {tmp_path}/derive.json"
    )
    demo = json.loads((tmp_path / "demo.json").read_text())
    assert demo["summary"]["test"]["comp"]["accuracy"] == 0.73 and demo["seconds"] >= 0
    assert demo["command"] == f"fanbu demo --home {tmp_path}/demo-home"
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert {"cpu_count", "torch_threads", "python", "torch", "git_commit"} <= set(environment)
    assert json.loads((tmp_path / "suite.json").read_text())["failed"] == ["feedback"]


def test_bench_all_exits_non_zero_when_a_bench_failed(tmp_path, stand_ins, monkeypatch):
    import fanbu.cli

    monkeypatch.setattr(fanbu.cli, "_demo_in", _demo)
    result = runner.invoke(app, ["bench", "all", "--quick", "--out-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert stand_ins == ["derive", "feedback", "federated", "serve"]
    assert (tmp_path / "demo.json").exists()


def test_bench_all_names_an_unknown_bench(tmp_path):
    result = runner.invoke(app, ["bench", "all", "--quick", "--only", "nope", "--out-dir", str(tmp_path)])
    assert result.exit_code != 0 and "choose from derive" in result.output


def test_bench_all_exits_zero_when_every_bench_finished(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(suite, "RUNNERS", {"derive": _stand_in(DERIVE, calls)})
    result = runner.invoke(app, ["bench", "all", "--quick", "--no-demo", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == ["derive"] and not (tmp_path / "demo.json").exists()


def test_resume_keeps_finished_benches_and_reruns_failed_ones(tmp_path, stand_ins):
    settings = SuiteSettings(quick=True, out_dir=tmp_path, seeds=2)
    run_suite(settings, Console(quiet=True), demo=_demo)
    stand_ins.clear()
    resumed = SuiteSettings(quick=True, out_dir=tmp_path, seeds=2, resume=True)
    record = run_suite(resumed, Console(quiet=True), demo=_demo)
    assert stand_ins == ["feedback"]  # the one that failed runs again; the finished ones are kept
    assert record["benches"]["derive"]["resumed"] is True and "resumed" not in record["benches"]["feedback"]
    assert record["benches"]["demo"]["resumed"] is True
    assert record["order"] == ["derive", "feedback", "federated", "serve", "demo"]
    assert json.loads((tmp_path / "derive.json").read_text())["seeds_asked"] == 2  # the kept file, untouched
    assert record["command"].endswith(f"--resume --out-dir {tmp_path}")


def test_resume_runs_again_after_a_change_of_command_or_code(tmp_path, stand_ins, monkeypatch):
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=2, demo=False), Console(quiet=True))
    stand_ins.clear()
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=3, resume=True, demo=False), Console(quiet=True))
    assert stand_ins == ["derive", "feedback", "federated", "serve"]  # --seeds 3 is another command
    stand_ins.clear()
    monkeypatch.setattr(suite, "source_fingerprint", lambda *packages: "other-code")
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=3, resume=True, demo=False), Console(quiet=True))
    assert stand_ins == ["derive", "feedback", "federated", "serve"]  # fanbu's code changed


def test_without_resume_every_bench_runs_and_work_directories_start_empty(tmp_path, stand_ins):
    settings = SuiteSettings(quick=True, out_dir=tmp_path, demo=False)
    run_suite(settings, Console(quiet=True))
    kept = suite.work_of("federated", settings) / "results" / "part.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    stand_ins.clear()
    run_suite(settings, Console(quiet=True))
    assert stand_ins == ["derive", "feedback", "federated", "serve"] and not kept.exists()


def test_only_runs_the_named_benches_and_seeds_reach_every_seeded_bench(tmp_path, stand_ins):
    settings = SuiteSettings(quick=True, out_dir=tmp_path, seeds=3, only=("serve", "federated"))
    record = run_suite(settings, Console(quiet=True), demo=_demo)
    assert stand_ins == ["federated", "serve"] and record["order"] == ["federated", "serve"]  # no demo unless named
    assert record["benches"]["federated"]["command"] == (
        f"fanbu bench federated --quick --seeds 3 --work {tmp_path}/work/federated --out {tmp_path}/federated.json"
    )
    assert suite.command_of("rl", settings, tmp_path / "rl.json") == f"fanbu bench rl --quick --seeds 3 --out {tmp_path}/rl.json"
    assert suite.command_of("lm", settings, tmp_path / "lm.json") == f"fanbu bench lm --quick --seeds 3 --out {tmp_path}/lm.json"
    assert record["failed"] == []
    again = run_suite(SuiteSettings(quick=True, out_dir=tmp_path, only=("derive", "feedback")), Console(quiet=True))
    assert again["order"] == ["derive", "feedback", "federated", "serve"]  # the earlier entries stay described
    assert again["failed"] == ["feedback"] and again["benches"]["serve"]["status"] == "ok"
    with pytest.raises(ValueError, match="--only nope"):
        run_suite(SuiteSettings(quick=True, out_dir=tmp_path, only=("nope",)), Console(quiet=True))


def test_results_render_commands_targets_demo_and_environment(tmp_path, stand_ins):
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path), Console(quiet=True), demo=_demo)
    out = tmp_path / "RESULTS.md"
    result = runner.invoke(app, ["bench", "results", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    # every table headed by the command that made it
    assert "| `fanbu bench derive --quick --seeds 2 --out DIR/derive.json` | value | interval |" in text
    assert (
        "| `fanbu bench derive --quick --seeds 2 --out DIR/derive.json`: targets | value | bar | met |"
        in text
    )
    assert "| retention | 0.997 | 0.98 | met | [0.99, 1.004] | acc ratio >= bar |" in text
    assert "| speedup_b1 | 7.4 | 10 | **SHORT** |  | p50 ratio >= bar |" in text
    assert "`fanbu bench derive --quick --seeds 2 --out DIR/derive.json`: `lm`" in text
    assert "| rec | 0.978 |" in text  # the per-domain rows
    # the federated bench's flat targets: a number paired with its _met, nested yes/no
    assert "| fed_ratio | 0.96 |  | met |" in text and "fed_ratio_met" not in text
    assert "| attacks_held.sign_flip |  |  | **SHORT** |" in text
    assert "| fed_acc | 0.75 |" in text and "| scale.clients | 100 |" in text
    # the serve bench's figures over seeds, and a target's extra key
    assert "| cascade.acc | 0.93 |" in text and "none lost; on: equal_threads" in text
    # the failure, the demo and the machine
    assert "**FAILED**" in text and "RuntimeError: out of memory" in text and "Failed: feedback." in text
    assert (
        f"`fanbu demo --home {tmp_path}/demo-home`:" in text
        and "| comp | feedback | 200 | 0.73 | 0.7 | 0.63 |" in text
    )
    assert "| bbc-news | held out | 200 | 0.97 |" in text
    assert "## environment" in text and "| torch_threads |" in text
    assert (
        text.index("## derive") < text.index("## feedback") < text.index("## serve") < text.index("## demo")
    )


def test_rendering_is_deterministic(tmp_path):
    for name, report in (("serve", SERVE), ("federated", FEDERATED), ("derive", DERIVE)):
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    (tmp_path / "environment.json").write_text(json.dumps({"python": "3.11.9", "cpu_count": 2}))
    first = render(tmp_path)
    # the same content, keys written in another order, gives the same bytes
    for name, report in (("serve", SERVE), ("federated", FEDERATED), ("derive", DERIVE)):
        (tmp_path / f"{name}.json").write_text(json.dumps(dict(reversed(list(report.items())))))
    assert render(tmp_path) == first
    # without suite.json: the benches in the suite's order
    assert first.index("## derive") < first.index("## federated") < first.index("## serve")
    assert "| cpu_count | 2 |" in first


def test_targets_of_any_shape():
    assert target_rows({"met": True, "pgr_mean": 0.5}) == [
        ["met", "", "", "met", "", ""],
        ["pgr_mean", "0.5", "", "", "", ""],
    ]
    assert target_rows(True) == [["target", "yes", "", "met", "", ""]]


def test_row_tables_name_rows_and_print_each_figure_with_its_interval():
    report = {
        "causal": [{"method": "champion", "clean_acc": 74.0, "clean_acc_interval": [70.0, 78.0]}],
        "strategies": [{"name": "merge", "pgr_mean": 0.84, "seed_interval": {"pgr_mean": [0.65, 1.02]}}],
        "hierarchy": [{"method": "flat", "acc_mean": 0.785, "acc_lo": 0.765, "acc_hi": 0.805, "labels_per_class": 8}],
        "merge": [{"method": "ties", "arrangement": "levels", "pgr_mean": 0.835}],
        "runs": [{"method": "raw", "acc": 0.5}],  # per-run records stay in the JSON
        "many": [{"method": f"m{i}", "acc": 0.5} for i in range(MAX_ROWS + 1)],
    }
    text = "\n".join(row_tables(report, "cmd"))
    assert "| champion | 74 [70, 78] |" in text
    assert "| merge | 0.84 [0.65, 1.02] |" in text
    assert "| cmd: `hierarchy` | acc_mean | labels_per_class |" in text  # acc_lo/acc_hi are its interval
    assert "| flat | 0.785 [0.765, 0.805] | 8 |" in text
    assert "| ties/levels | 0.835 |" in text
    assert "`runs`" not in text and "`many`" not in text


def test_bench_results_needs_a_directory(tmp_path):
    result = runner.invoke(app, ["bench", "results", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "fanbu bench all --quick" in result.output


def test_demo_targets_are_its_time_and_its_small_models_share_of_large_v0():
    demo = {
        "seconds": 480.0,
        "summary": {
            "small": [
                {"domain": "comp", "acc": 0.70, "large_acc": 0.72},
                {"domain": "rec", "acc": 0.80, "large_acc": 0.78},
                {"domain": "sci", "acc": 0.9},  # no large_acc: not counted
            ]
        },
    }
    targets = demo_targets(demo)
    assert targets["seconds"]["met"] is True and targets["seconds"]["bar"] == 600.0
    assert targets["small_retention"]["value"] == pytest.approx(1.5 / 1.5)
    assert targets["small_retention"]["met"] is True and "2 domains" in targets["small_retention"]["rule"]
    slow = demo_targets({"seconds": 601.0, "summary": {"small": [{"acc": 0.5, "large_acc": 0.8}]}})
    assert slow["seconds"]["met"] is False and slow["small_retention"]["met"] is False
    assert demo_targets(None) == {}


def test_readme_block_quotes_every_target_and_keeps_the_rest_of_the_readme(tmp_path):
    results = tmp_path / "bench-results"
    results.mkdir()
    (results / "derive.json").write_text(json.dumps(DERIVE))
    (results / "serve.json").write_text(json.dumps(SERVE))
    (results / "demo.json").write_text(
        json.dumps(
            {
                "command": "fanbu demo",
                "seconds": 480.0,
                "summary": {"small": [{"acc": 0.7, "large_acc": 0.7}]},
            }
        )
    )
    (results / "environment.json").write_text(json.dumps({"git_commit": "0123456789abcdef"}))
    readme = tmp_path / "README.md"
    before, after = "# x\n\n## Results\n\nintro\n\n", "\n\n## Next\n\nkept | as is\n"
    readme.write_text(before + BEGIN + "\nan old table\n" + END + after)
    out = tmp_path / "RESULTS.md"
    result = runner.invoke(
        app, ["bench", "results", str(results), "--out", str(out), "--readme", str(readme)]
    )
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after) and "an old table" not in text
    assert "at commit `0123456`" in text
    assert "| [derive](RESULTS.md#derive) | retention | 0.997 | [0.99, 1.004] | 0.98 | met |" in text
    assert "| [derive](RESULTS.md#derive) | speedup_b1 | 7.4 |  | 10 | **SHORT** |" in text
    assert "| [serve](RESULTS.md#serve) | lost_after_kill | 0 |  | 0 | met |" in text
    assert "| [demo](RESULTS.md#demo) | seconds | 480 |  | 600 | met |" in text
    assert "| [demo](RESULTS.md#demo) | small_retention | 1 |  | 0.95 | met |" in text
    assert "Not run yet: feedback, federated, loop" in text  # what the block cannot vouch for is named
    # the same table heads RESULTS.md, and the demo's targets are in its section
    rendered = out.read_text()
    assert (
        "## Targets" in rendered and "| derive | retention | 0.997 | [0.99, 1.004] | 0.98 | met |" in rendered
    )
    assert "`fanbu demo`: targets" in rendered
    # rewriting is idempotent
    runner.invoke(app, ["bench", "results", str(results), "--out", str(out), "--readme", str(readme)])
    assert readme.read_text() == text


def test_a_readme_without_the_markers_is_refused_unchanged(tmp_path):
    results = tmp_path / "bench-results"
    results.mkdir()
    (results / "derive.json").write_text(json.dumps(DERIVE))
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    result = runner.invoke(
        app, ["bench", "results", str(results), "--out", str(tmp_path / "R.md"), "--readme", str(readme)]
    )
    assert result.exit_code == 2 and "results:begin" in " ".join(result.output.split())
    assert readme.read_text() == "# no markers\n"
    with pytest.raises(ValueError, match="exactly one"):
        write_readme_block(results, _twice(tmp_path))
    missing = runner.invoke(app, ["bench", "results", str(results), "--readme", str(tmp_path / "nope.md")])
    assert missing.exit_code == 2 and "is not a file" in " ".join(missing.output.split())


def _twice(tmp_path: Path) -> Path:
    path = tmp_path / "TWICE.md"
    path.write_text(f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n")
    return path


def test_a_resumed_suite_says_what_was_kept_and_the_benches_own_time():
    suite_record = {
        "benches": {
            "derive": {"status": "ok", "seconds": 100.0, "code": "a", "resumed": True},
            "feedback": {"status": "ok", "seconds": 50.5, "code": "a"},
        }
    }
    assert provenance(suite_record) == (
        "1 of the 2 benches were kept from earlier runs of the same command and code (`--resume`); "
        "the benches' own times add up to 150 s."
    )
    suite_record["benches"]["feedback"]["code"] = "b"
    assert "different fanbu code (`a`, `b`)" in provenance(suite_record)
    assert provenance({}) == ""


def test_a_resumed_suite_stopped_midway_keeps_the_entries_it_had_not_reached(tmp_path, stand_ins, monkeypatch):
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=2), Console(quiet=True))
    before = json.loads((tmp_path / "suite.json").read_text())["benches"]
    assert before["serve"]["status"] == "ok"

    class Stopped(BaseException):
        """The process is stopped (a signal, the session's end) while feedback runs again."""

    def stopped(settings: SuiteSettings, out: Path, console: Console) -> dict[str, Any]:
        raise Stopped

    rerun = suite.RUNNERS["feedback"]
    monkeypatch.setitem(suite.RUNNERS, "feedback", stopped)
    with pytest.raises(Stopped):
        run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=2, resume=True), Console(quiet=True))
    after = json.loads((tmp_path / "suite.json").read_text())["benches"]
    assert after["derive"]["resumed"] is True
    # federated and serve were not reached: their finished entries are still there for the next --resume
    assert after["federated"] == before["federated"] and after["serve"] == before["serve"]
    stand_ins.clear()
    monkeypatch.setitem(suite.RUNNERS, "feedback", rerun)
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path, seeds=2, resume=True), Console(quiet=True))
    assert stand_ins == ["feedback"]


def test_a_results_file_the_suite_order_does_not_name_still_counts(tmp_path):
    (tmp_path / "derive.json").write_text(json.dumps(DERIVE))
    (tmp_path / "serve.json").write_text(json.dumps(SERVE))
    (tmp_path / "suite.json").write_text(json.dumps({"order": ["derive"], "benches": {"derive": {"status": "ok"}}}))
    text = render(tmp_path)
    assert text.index("## derive") < text.index("## serve") and "| serve | lost_after_kill |" in text


def test_two_suites_writing_one_directory_keep_each_others_entries(tmp_path, stand_ins, monkeypatch):
    """A suite that runs derive while another finishes serve in the same directory: both entries stay."""
    def derive_while_serve_runs(settings: SuiteSettings, out: Path, console: Console) -> dict[str, Any]:
        run_suite(SuiteSettings(quick=True, out_dir=tmp_path, only=("serve",)), Console(quiet=True))
        out.write_text(json.dumps(DERIVE))
        return DERIVE

    monkeypatch.setitem(suite.RUNNERS, "derive", derive_while_serve_runs)
    run_suite(SuiteSettings(quick=True, out_dir=tmp_path, only=("derive",)), Console(quiet=True))
    benches = json.loads((tmp_path / "suite.json").read_text())["benches"]
    assert benches["derive"]["status"] == "ok" and benches["serve"]["status"] == "ok"
