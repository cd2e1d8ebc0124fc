"""The executor section of a recipe, and the one function that turns it into an executor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.execute.base import Executor
from fanbu.execute.local import LocalExecutor
from fanbu.execute.ray_executor import RayExecutor


class ExecutorConfig(Strict):
    """Where a recipe's independent jobs (e.g. one per domain) run."""

    kind: Literal["local", "ray"] = Field(
        default="local", description="local: this machine's processes; ray: a Ray cluster (or local Ray)."
    )
    workers: int = Field(
        default=1, ge=1, description="local: parallel worker processes (1 runs in this process, in order)."
    )
    address: str | None = Field(
        default=None, description="ray: the cluster address (e.g. ray://head:10001); unset starts local Ray."
    )
    num_cpus_per_task: float = Field(default=1.0, gt=0.0, description="ray: CPUs each task reserves.")

    @model_validator(mode="after")
    def _check(self) -> ExecutorConfig:
        if self.kind == "local" and self.address is not None:
            raise ValueError("executor.address is only used with kind: ray; set kind: ray or remove address")
        if self.kind == "ray" and self.workers != 1:
            raise ValueError(
                "executor.workers applies to kind: local; Ray runs as many tasks as the cluster has CPUs "
                "for (set num_cpus_per_task instead)"
            )
        return self


def make_executor(config: ExecutorConfig) -> Executor:
    """A :class:`LocalExecutor` or :class:`RayExecutor` as ``config`` says."""
    if config.kind == "ray":
        return RayExecutor(address=config.address, num_cpus_per_task=config.num_cpus_per_task)
    return LocalExecutor(workers=config.workers)
