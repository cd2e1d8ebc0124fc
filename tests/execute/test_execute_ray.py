"""RayExecutor against a local Ray instance started once for this module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fanbu.execute import ExecutionError, ExecutorConfig, RayExecutor, make_executor
from tests.execute.workers import fail_on_two, square

ray = pytest.importorskip("ray")


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


def test_ray_refuses_a_lambda(local_ray: None) -> None:
    with pytest.raises(ExecutionError, match=r"RayExecutor cannot send .*\(a lambda\).*top-level"):
        RayExecutor().map(lambda x: x, [1])
