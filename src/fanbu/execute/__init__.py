"""Executors: map a function over independent jobs locally (in-process or processes) or on Ray."""

from fanbu.execute.base import ExecutionError, Executor, require_importable
from fanbu.execute.config import ExecutorConfig, make_executor
from fanbu.execute.local import LocalExecutor
from fanbu.execute.ray_executor import RayExecutor

__all__ = [
    "ExecutionError",
    "Executor",
    "ExecutorConfig",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "require_importable",
]
