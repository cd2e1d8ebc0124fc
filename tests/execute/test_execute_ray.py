"""RayExecutor, tested in a child pytest process so that a crash inside Ray cannot end this one.

Ray's native core aborts the process that drives it when its own checks fail (as it did when
RayExecutor cancelled tasks that were finishing), and that process would be pytest itself, ending
the whole suite with no summary. So the Ray tests live in ray_isolated.py (not collected on its own)
and run once, in a child ``python -m pytest -v``; each test here reports one of them by reading the
child's per-test result lines, and a child that died or hung fails these tests, not the suite.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

if find_spec("ray") is None:
    pytest.skip("ray is not installed", allow_module_level=True)

INNER = Path(__file__).with_name("ray_isolated.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
SUMMARY = re.compile(r"^=+ .*\b(passed|failed|skipped|errors?|no tests ran)\b.* in [0-9.]+s", re.MULTILINE)


def inner_tests() -> list[str]:
    """The test functions defined in ray_isolated.py (read from its source: Ray is not imported)."""
    tree = ast.parse(INNER.read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    ]


@dataclass
class ChildRun:
    """What the child pytest process did: its exit status (None: it timed out) and its output."""

    returncode: int | None
    stdout: str
    stderr: str

    def outcomes(self, test: str) -> list[str]:
        """The outcomes ``-v`` printed for ``test`` (and its parametrised cases), in order."""
        line = re.compile(rf"::{re.escape(test)}(?:\[[^\]\n]*\])? ({'|'.join(OUTCOMES)})\b")
        return line.findall(self.stdout)

    def section(self, test: str) -> str:
        """pytest's failure report for ``test`` (the ``____ test ____`` block), or ''."""
        match = re.search(
            rf"^_+ (?:ERROR at \w+ of )?{re.escape(test)}\b.*?(?=^_{{3,}} |^=+ |\Z)",
            self.stdout,
            re.MULTILINE | re.DOTALL,
        )
        return match.group(0) if match else ""

    def status(self) -> str:
        """The exit status in words."""
        if self.returncode is None:
            return f"did not finish within {TIMEOUT_S} s and was killed"
        if self.returncode < 0:
            try:
                return f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"was killed by signal {-self.returncode}"
        return f"exited with status {self.returncode}"

    def tail(self, lines: int = 25) -> str:
        """The last lines of the child's stdout and of its stderr."""
        parts = [("stdout", self.stdout), ("stderr", self.stderr)]
        return "\n".join(
            f"--- {name} (last {lines} lines) ---\n" + "\n".join(text.rstrip().splitlines()[-lines:])
            for name, text in parts
            if text.strip()
        )


def as_text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


@pytest.fixture(scope="module")
def child() -> ChildRun:
    """Run ray_isolated.py once in a child pytest process (one local Ray instance for all its tests)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # keep every result line if the child dies
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(INNER.relative_to(ROOT))]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:  # its output so far comes as bytes
        return ChildRun(None, as_text(exc.stdout), as_text(exc.stderr))
    return ChildRun(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("test", inner_tests())
def test_ray(child: ChildRun, test: str) -> None:
    """One test of ray_isolated.py, as the child process ran it."""
    outcomes = child.outcomes(test)
    if not outcomes:
        pytest.fail(
            f"the Ray test process {child.status()} before {test} finished (a crash in Ray's native "
            "code ends the process with no Python traceback: see the Ray logs under "
            f"/tmp/ray/session_latest/logs); its output ends:\n{child.tail()}",
            pytrace=False,
        )
    if "FAILED" in outcomes or "ERROR" in outcomes or "XPASS" in outcomes:
        report = child.section(test) or (
            f"(pytest's report for it was never printed: the process {child.status()})\n{child.tail()}"
        )
        pytest.fail(f"{test} {'/'.join(outcomes)} in the Ray test process:\n{report}", pytrace=False)
    if all(outcome in ("SKIPPED", "XFAIL") for outcome in outcomes):
        pytest.skip(f"{test} was skipped in the Ray test process")


def test_ray_test_process_ends_with_a_summary(child: ChildRun) -> None:
    """The child ended normally: pytest's summary line, and status 0 (or 1 when tests above failed).

    This catches what no single test shows: a crash or hang after the last test (Ray's shutdown).
    """
    summary = SUMMARY.search(child.stdout)
    failures = bool(summary) and re.search(r"\b(failed|errors?)\b", summary.group(0)) is not None
    if summary is None or child.returncode not in (0, 1) or (child.returncode == 1) != failures:
        ended = f"after {summary.group(0).strip('= ')!r}" if summary else "with no pytest summary line"
        pytest.fail(
            f"the Ray test process {child.status()} {ended}; its output ends:\n{child.tail()}", pytrace=False
        )
