"""``fanbu bench all``: every quick bench in turn, and the demo timed, into one directory of JSON files.

Each bench's ``run_bench`` writes ``DIR/<bench>.json`` (its own report, with its ``command`` and
``target``); the demo's summary and wall-clock seconds go to ``DIR/demo.json``; the machine to
``DIR/environment.json``; and what ran, in what order, how long and whether it failed to
``DIR/suite.json``. A bench that fails is recorded there with its error and the others still run.
:mod:`fanbu.bench.results` renders the directory as one markdown file.

The whole suite takes hours on a laptop, so it resumes. The benches that keep finished parts (derive,
feedback, federated, loop, unlabeled, adapt) keep them under ``DIR/work/<bench>``, each part fingerprinted with its
settings and fanbu's code. With ``resume``, a bench that finished before with the same command and the
same code (:func:`fanbu.bench.work.source_fingerprint`) is not run again, and one that was stopped
part-way starts from its kept parts; without it, every bench runs from nothing.

Two suites may write one directory at once with different ``--only`` benches (e.g. on two machines sharing
it): each writes ``suite.json`` under a lock and keeps the entries of the benches it did not choose as the
file has them then.

The demo lives in :mod:`fanbu.demo`, a sibling of this package that it may not import: the command
line passes it in as ``demo``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import fanbu
from fanbu.bench.work import source_fingerprint
from fanbu.io import atomic_write_json

#: The benches ``fanbu bench all`` runs, in this order; the demo runs after them.
BENCHES = (
    "derive", "feedback", "federated", "serve", "loop", "reliability", "rl", "unlabeled", "adapt", "lm", "structure",
)
#: The files of ``DIR`` that are not a bench's report.
SUITE_FILE, ENVIRONMENT_FILE, DEMO_FILE = "suite.json", "environment.json", "demo.json"
DEMO_HOME = "demo-home"


@dataclass(frozen=True)
class SuiteSettings:
    """What ``fanbu bench all`` was asked for.

    ``seeds`` goes to every bench that takes ``--seeds`` (derive, feedback, federated, serve, loop, rl,
    unlabeled); None leaves each bench its own default. ``lm`` adds the derive bench's causal-LM part
    (``--lm``: SmolLM2-135M, about 12 minutes more on 2 cores). ``only`` runs those benches (in the
    suite's order) and no demo unless it names ``demo``; ``resume`` keeps what an earlier run of the same
    command and code finished (see the module docstring).
    """

    quick: bool
    out_dir: Path
    seeds: int | None = None
    lm: bool = False
    demo: bool = True
    only: tuple[str, ...] | None = None
    resume: bool = False
    #: ``fanbu validate``'s function, for the reliability bench's recipe fuzzer: the command line passes
    #: :func:`fanbu.recipes.validate_file` (the recipes module sits above the benches).
    validate_recipe: Callable[[Path], Any] | None = None


#: A bench runner: run it with these settings, write its JSON report to the path, print on the console.
Runner = Callable[[SuiteSettings, Path, Console], Any]
#: The demo: run it with a fresh registry home (the path) and return the summary it printed.
DemoRunner = Callable[[Path, Console], dict[str, Any]]


def _quick(s: SuiteSettings) -> str:
    return " --quick" if s.quick else ""


#: The benches that take ``--seeds``; the suite's ``seeds`` goes to each of them.
SEEDED = frozenset({"derive", "feedback", "federated", "serve", "loop", "rl", "unlabeled", "structure", "lm"})
#: The benches that keep finished parts in a work directory (``--work``), so a stopped run resumes.
KEEPS_WORK = frozenset({"derive", "feedback", "federated", "loop", "unlabeled", "adapt"})
WORK_DIR = "work"


def _seeds(name: str, s: SuiteSettings) -> str:
    return f" --seeds {s.seeds}" if s.seeds is not None and name in SEEDED else ""


def _kw_seeds(name: str, s: SuiteSettings) -> dict[str, int]:
    return {"seeds": s.seeds} if s.seeds is not None and name in SEEDED else {}


def work_of(name: str, s: SuiteSettings) -> Path:
    """Where bench ``name`` keeps its finished parts under the suite's directory."""
    return s.out_dir / WORK_DIR / name


def command_of(name: str, s: SuiteSettings, out: Path) -> str:
    """The one-bench command equivalent to what the suite runs for ``name``."""
    if name == "demo":
        return f"fanbu demo --home {out}"
    extra = {"derive": " --lm" if s.lm else "", "serve": " --domain rec"}.get(name, "")
    work = f" --work {work_of(name, s)}" if name in KEEPS_WORK else ""
    return f"fanbu bench {name}{_quick(s)}{extra}{_seeds(name, s)}{work} --out {out}"


def _derive(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.derive import run_bench

    return run_bench(s.quick, out, console, lm=s.lm, work=work_of("derive", s), **_kw_seeds("derive", s))


def _feedback(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.feedback import run_bench

    return run_bench(s.quick, out, console, work=work_of("feedback", s), **_kw_seeds("feedback", s))


def _federated(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.federated import run_bench

    return run_bench(s.quick, out, console, work=work_of("federated", s), **_kw_seeds("federated", s))


def _serve(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.serve import run_bench

    return run_bench(s.quick, out, console, **_kw_seeds("serve", s))


def _loop(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.loop import run_bench

    return run_bench(s.quick, out, console, work=work_of("loop", s), **_kw_seeds("loop", s))


def _reliability(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.reliability import run_bench

    return run_bench(s.quick, out, console, validate_recipe=s.validate_recipe)


def _rl(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.rl import run_bench

    return run_bench(s.quick, out, console, **_kw_seeds("rl", s))


def _unlabeled(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.unlabeled import run_bench

    return run_bench(s.quick, out, console, work=work_of("unlabeled", s), **_kw_seeds("unlabeled", s))


def _adapt(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.adapt import run_bench

    return run_bench(s.quick, out, console, work=work_of("adapt", s))  # 5 draws of the k examples per cell


def _lm(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.lm.run import SECTIONS, run_bench

    return run_bench(s.quick, out, console, SECTIONS, **_kw_seeds("lm", s))


def _structure(s: SuiteSettings, out: Path, console: Console) -> Any:
    from fanbu.bench.structure.run import SECTIONS, run_bench

    return run_bench(s.quick, out, console, SECTIONS, None, **_kw_seeds("structure", s))


#: Each bench's runner, by name (the tests put stand-ins here).
RUNNERS: dict[str, Runner] = {
    "derive": _derive,
    "feedback": _feedback,
    "federated": _federated,
    "serve": _serve,
    "loop": _loop,
    "reliability": _reliability,
    "rl": _rl,
    "unlabeled": _unlabeled,
    "adapt": _adapt,
    "lm": _lm,
    "structure": _structure,
}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            check=False,
            cwd=Path(fanbu.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict[str, Any]:
    """The machine and software the numbers come from (recorded before any bench runs)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fanbu": fanbu.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _run_one(name: str, job: Callable[[], Any], command: str, out: Path, console: Console) -> dict[str, Any]:
    """Run ``job`` (it writes ``out``); the record of how it went. A stale ``out`` is removed first."""
    out.unlink(missing_ok=True)
    console.rule(f"[bold]{name}[/]: {command}")
    started = time.perf_counter()
    try:
        job()
    except Exception as exc:  # noqa: BLE001 - a failing bench is recorded, and the others still run
        seconds = time.perf_counter() - started
        console.print(
            f"[bold red]{name} failed[/] after {seconds:.0f} s: {type(exc).__name__}: {exc}", highlight=False
        )
        return {
            "status": "failed",
            "command": command,
            "seconds": seconds,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=-8),
        }
    seconds = time.perf_counter() - started
    if not out.exists():
        return {
            "status": "failed",
            "command": command,
            "seconds": seconds,
            "error": f"the bench finished but wrote no {out.name}",
        }
    return {"status": "ok", "command": command, "seconds": seconds}


def _earlier(root: Path) -> dict[str, dict[str, Any]]:
    """The bench entries of an earlier ``suite.json`` in ``root`` (none when there is none, or it is unreadable)."""
    try:
        earlier = json.loads((root / SUITE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    benches = earlier.get("benches") if isinstance(earlier, dict) else None
    return {k: v for k, v in benches.items() if isinstance(v, dict)} if isinstance(benches, dict) else {}


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on ``root``'s suite record, so two suites writing there do not drop each other's entries."""
    with (root / f"{SUITE_FILE}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _kept(entry: dict[str, Any] | None, command: str, code: str, out: Path) -> bool:
    """Whether an earlier run's entry stands for this one: finished, same command and code, its file there."""
    return (
        entry is not None
        and entry.get("status") == "ok"
        and entry.get("command") == command
        and entry.get("code") == code
        and out.exists()
    )


def _chosen(settings: SuiteSettings, runners: dict[str, Runner]) -> tuple[list[str], bool]:
    """The benches to run, in the suite's order, and whether the demo runs."""
    if settings.only is None:
        return list(runners), settings.demo
    unknown = sorted(set(settings.only) - set(runners) - {"demo"})
    if unknown:
        raise ValueError(f"--only {', '.join(unknown)}: choose from {', '.join([*runners, 'demo'])}")
    return [n for n in runners if n in settings.only], settings.demo and "demo" in settings.only


def run_suite(
    settings: SuiteSettings,
    console: Console,
    demo: DemoRunner | None = None,
    runners: dict[str, Runner] | None = None,
) -> dict[str, Any]:
    """Run every bench of ``runners`` (default :data:`RUNNERS`) in turn, then ``demo`` if given and
    ``settings.demo``; write ``suite.json`` (and ``environment.json``) and return the suite record.

    ``record["failed"]`` lists the benches that failed; the caller exits non-zero if it is not empty.
    With ``settings.resume``, an earlier entry of the same command and code is kept (``"resumed": true``)
    and its bench not run; otherwise each bench's work directory is emptied first.
    """
    runners = RUNNERS if runners is None else runners
    names, with_demo = _chosen(settings, runners)
    root = settings.out_dir
    root.mkdir(parents=True, exist_ok=True)
    found = _earlier(root)
    earlier = found if settings.resume else {}
    chosen = {*names, *(["demo"] if demo is not None and with_demo else [])}
    # suite.json keeps describing the directory: with --only, the benches not chosen keep their earlier
    # entries; with --resume, so do the chosen ones until their turn (a stop before it must not lose them)
    carried = {n: e for n, e in found.items() if n not in chosen or settings.resume}
    everything = [*runners, "demo"]
    code = source_fingerprint("fanbu")
    atomic_write_json(root / ENVIRONMENT_FILE, environment())
    record: dict[str, Any] = {
        "command": argv_command(settings),
        "quick": settings.quick,
        "seeds": settings.seeds,
        "lm": settings.lm,
        "code": code,
        "started_at": _now(),
        "benches": dict(carried),
        "order": [],
    }
    started = time.perf_counter()

    def save() -> None:
        with _locked(root):
            # another suite may have finished benches this one did not choose since it started: keep theirs
            others = {n: e for n, e in _earlier(root).items() if n not in chosen}
            record["benches"] = {**others, **{n: e for n, e in record["benches"].items() if n in chosen}}
            record["seconds"] = time.perf_counter() - started
            record["order"] = [n for n in everything if n in record["benches"]]
            record["failed"] = [n for n in record["order"] if record["benches"][n].get("status") != "ok"]
            atomic_write_json(root / SUITE_FILE, record)

    def run(name: str, job: Callable[[], Any], command: str, out: Path) -> None:
        if _kept(earlier.get(name), command, code, out):
            console.print(f"[bold]{name}[/]: kept from the earlier run ({out.name}, same command and code)")
            entry = {**earlier[name], "resumed": True}
        else:
            if not settings.resume and name in KEEPS_WORK:
                shutil.rmtree(work_of(name, settings), ignore_errors=True)  # from nothing, as asked
            entry = {**_run_one(name, job, command, out, console), "code": code}
        record["benches"][name] = entry
        save()  # a bench that kills the process still leaves the ones before it recorded

    for name in names:
        out = root / f"{name}.json"
        run(name, partial(runners[name], settings, out, console), command_of(name, settings, out), out)
    if demo is not None and with_demo:
        home = root / DEMO_HOME
        out = root / DEMO_FILE

        def job() -> None:
            if home.exists():
                shutil.rmtree(home)  # a fresh registry: the demo's time from nothing
            began = time.perf_counter()
            summary = demo(home, console)
            seconds = time.perf_counter() - began
            command = command_of("demo", settings, home)
            atomic_write_json(out, {"command": command, "seconds": seconds, "summary": summary})

        run("demo", job, command_of("demo", settings, home), out)
    record["finished_at"] = _now()
    save()
    return record


def argv_command(settings: SuiteSettings) -> str:
    """``fanbu bench all ...`` as it would be typed for ``settings``."""
    seeds = f" --seeds {settings.seeds}" if settings.seeds is not None else ""
    only = "".join(f" --only {n}" for n in settings.only or ())
    return (
        f"fanbu bench all{_quick(settings)}{seeds}{' --lm' if settings.lm else ''}"
        f"{'' if settings.demo else ' --no-demo'}{only}{' --resume' if settings.resume else ''}"
        f" --out-dir {settings.out_dir}"
    )
