"""ExecutorConfig validation, make_executor, and the error when Ray is missing."""

from __future__ import annotations

import sys

import pytest

from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.execute import ExecutionError, ExecutorConfig, LocalExecutor, RayExecutor, make_executor


def test_make_executor_builds_a_local_executor_by_default() -> None:
    executor = make_executor(validate(ExecutorConfig, {"workers": 3}))
    assert isinstance(executor, LocalExecutor) and executor.workers == 3
    assert isinstance(make_executor(ExecutorConfig()), LocalExecutor)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "local", "address": "ray://head:10001"}, "address is only used with kind: ray"),
        ({"kind": "ray", "workers": 4}, "executor.workers applies to kind: local"),
        ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
        ({"kind": "ray", "num_cpus_per_task": 0}, "num_cpus_per_task: Input should be greater than 0"),
        ({"kind": "dask"}, "kind: Input should be 'local' or 'ray'"),
        ({"worker": 2}, "worker: unknown key"),
    ],
)
def test_bad_executor_settings_are_explained(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(ExecutorConfig, data, source="executor")


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ExecutionError, match=r"pip install 'fanbu\[ray\]', or set executor.kind: local"):
        make_executor(ExecutorConfig(kind="ray"))
    with pytest.raises(ExecutionError, match=r"pip install 'fanbu\[ray\]'"):
        RayExecutor()


def test_ray_rejects_non_positive_cpus_per_task() -> None:
    with pytest.raises(ExecutionError, match="num_cpus_per_task must be > 0, got 0"):
        RayExecutor(num_cpus_per_task=0)
