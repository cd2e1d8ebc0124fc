"""LocalExecutor: in-process and spawned workers, ordering, failures, the pickling check."""

from __future__ import annotations

import os

import pytest

from fanbu.execute import ExecutionError, LocalExecutor
from fanbu.execute.local import cpu_count
from tests.execute.workers import fail_on_two, square, worker_info


def test_one_worker_runs_in_this_process_in_order() -> None:
    calls: list[int] = []

    def record(x: int) -> int:  # a closure is fine in-process
        calls.append(x)
        return x * 10

    assert LocalExecutor(1).map(record, [3, 1, 2]) == [30, 10, 20]
    assert calls == [3, 1, 2]
    assert LocalExecutor(1).map(worker_info, [0])[0][1] == os.getpid()


def test_two_workers_return_results_in_input_order_and_limit_threads() -> None:
    executor = LocalExecutor(workers=2)
    assert executor.map(square, [0, 1, 2, 3, 5]) == [0, 1, 4, 9, 25]
    infos = executor.map(worker_info, [0, 1, 2, 3])
    assert [i for i, _, _ in infos] == [0, 1, 2, 3]
    assert all(pid != os.getpid() for _, pid, _ in infos)
    assert {threads for _, _, threads in infos} == {max(1, cpu_count() // 2)}
    assert executor.map(square, []) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_item_is_named_with_its_original_message(workers: int) -> None:
    with pytest.raises(ExecutionError) as info:
        LocalExecutor(workers).map(fail_on_two, [0, 1, 2], names=["med", "law", "sport"])
    err = info.value
    assert err.name == "sport" and err.index == 2
    assert str(err) == "sport failed: ValueError: bad item 2: cannot process two"
    assert err.original == "ValueError: bad item 2: cannot process two"
    if workers > 1:
        assert "fail_on_two" in err.remote_traceback


def test_unnamed_items_are_named_by_position() -> None:
    with pytest.raises(ExecutionError, match=r"^item 2 failed: ValueError: bad item 2"):
        LocalExecutor(1).map(fail_on_two, [0, 1, 2])


def test_a_lambda_is_refused_by_worker_processes_with_an_explanation() -> None:
    with pytest.raises(ExecutionError) as info:
        LocalExecutor(2).map(lambda x: x, [1, 2])
    message = str(info.value)
    assert message.startswith("LocalExecutor(workers=2) cannot send '")
    assert "<lambda>' (a lambda) to other processes" in message
    assert "importable top-level callables" in message and "workers=1" in message


def test_a_nested_function_is_refused_by_worker_processes() -> None:
    def inner(x: int) -> int:
        return x

    with pytest.raises(ExecutionError, match=r"\(a nested function\).*importable top-level callables"):
        LocalExecutor(2).map(inner, [1])


def test_bad_arguments_say_what_to_fix() -> None:
    with pytest.raises(ExecutionError, match="workers must be >= 1, got 0"):
        LocalExecutor(0)
    with pytest.raises(ExecutionError, match="got 1 names for 2 items; give one name per item"):
        LocalExecutor(1).map(square, [1, 2], names=["a"])


def test_workers_exit_when_their_parent_is_killed(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = ("from fanbu.execute import LocalExecutor\n"
              "from tests.execute.workers import sleep_long\n"
              "LocalExecutor(2).map(sleep_long, [0, 1])\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline and len(workers) < 2:  # the two spawned workers, started
            time.sleep(0.5)
            children = psutil.Process(parent.pid).children()
            workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2, "the workers did not start"
        time.sleep(3)  # past their initialiser
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"workers {[p.pid for p in alive]} still run after their parent was killed"
    finally:
        parent.kill()
        for child in psutil.Process().children(recursive=True):
            if "sleep_long" in " ".join(child.cmdline()) or "spawn_main" in " ".join(child.cmdline()):
                child.kill()
