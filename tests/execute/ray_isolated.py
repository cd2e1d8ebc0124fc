"""RayExecutor against a local Ray instance started once for this module.

Not collected by a plain ``pytest`` run (the name has no ``test_`` prefix): test_execute_ray.py runs
this module in a child pytest process, so that a native crash in Ray (which aborts the process that
called it) fails those tests instead of killing the whole suite. Run it directly with
``.venv/bin/python -m pytest tests/execute/ray_isolated.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanbu.execute import ExecutionError, ExecutorConfig, RayExecutor, make_executor
from tests.execute.workers import fail_on_two, mark_or_fail_on_two, square

ray = pytest.importorskip("ray")

REPEATS = 50  # failing maps in a row that must each raise, not abort this process


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_maps_a_function_in_input_order(local_ray: None) -> None:
    executor = make_executor(ExecutorConfig(kind="ray", num_cpus_per_task=1.0))
    assert isinstance(executor, RayExecutor)
    assert executor.map(square, [0, 1, 2, 3, 5]) == [0, 1, 4, 9, 25]
    assert executor.map(square, []) == []
    executor.close()  # Ray was started by the fixture, not the executor: it stays up
    assert ray.is_initialized()


def test_ray_names_the_failing_item(local_ray: None) -> None:
    with pytest.raises(ExecutionError) as info:
        RayExecutor().map(fail_on_two, [0, 1, 2, 3], names=["a", "b", "c", "d"])
    assert info.value.name == "c" and info.value.index == 2
    assert str(info.value) == "c failed: ValueError: bad item 2: cannot process two"
    assert "fail_on_two" in info.value.remote_traceback


def test_ray_survives_many_failing_maps_in_a_row(local_ray: None) -> None:
    """The crash this guards against: cancelling the tasks still pending after a failure raced Ray's
    task bookkeeping and aborted the driver (Ray 2.x, task_manager.cc). Each failing map must raise."""
    executor = RayExecutor()
    items = list(range(8))
    names = [f"domain {i}" for i in items]
    for attempt in range(REPEATS):
        with pytest.raises(ExecutionError) as info:
            executor.map(fail_on_two, items, names=names)
        assert (info.value.name, info.value.index) == ("domain 2", 2), f"attempt {attempt}"
        assert str(info.value) == "domain 2 failed: ValueError: bad item 2: cannot process two"
        assert "fail_on_two" in info.value.remote_traceback
    assert executor.map(square, [0, 1, 2, 3, 5]) == [0, 1, 4, 9, 25]  # Ray is still usable


def test_ray_lets_the_other_items_finish_before_raising(local_ray: None, tmp_path: Path) -> None:
    """The other tasks are not cancelled: they run to the end, and map raises after they have."""
    jobs = [(str(tmp_path), x) for x in range(5)]
    with pytest.raises(ExecutionError) as info:
        RayExecutor().map(mark_or_fail_on_two, jobs, names=["a", "b", "c", "d", "e"])
    assert (info.value.name, info.value.index) == ("c", 2)
    assert "mark_or_fail_on_two" in info.value.remote_traceback
    assert sorted(os.listdir(tmp_path)) == ["0.done", "1.done", "3.done", "4.done"]


def test_ray_refuses_a_lambda(local_ray: None) -> None:
    with pytest.raises(ExecutionError, match=r"RayExecutor cannot send .*\(a lambda\).*top-level"):
        RayExecutor().map(lambda x: x, [1])
