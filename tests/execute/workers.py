"""Top-level functions the executor tests send to worker processes and Ray tasks."""

from __future__ import annotations

import os
import time


def square(x: int) -> int:
    """The square; the items finish out of order (earlier items sleep longer)."""
    time.sleep(0.05 * (4 - x) if 0 <= x < 4 else 0.0)
    return x * x


def worker_info(x: int) -> tuple[int, int, int]:
    """The item, the worker's process id and its torch thread count."""
    import torch

    return x, os.getpid(), torch.get_num_threads()


def fail_on_two(x: int) -> int:
    """Fails on item 2 with a recognisable message."""
    if x == 2:
        raise ValueError(f"bad item {x}: cannot process two")
    return x + 1


def mark_or_fail_on_two(job: tuple[str, int]) -> int:
    """``(directory, x)``: fails on item 2 at once; any other item sleeps, then writes ``<x>.done``.

    The other items finish after item 2 has failed, so a caller that returns before they end finds
    their marker files missing.
    """
    directory, x = job
    if x == 2:
        raise ValueError(f"bad item {x}: cannot process two")
    time.sleep(0.2)
    with open(os.path.join(directory, f"{x}.done"), "w") as f:
        f.write("done")
    return x + 1


def sleep_long(x: int) -> int:
    """Sleeps a minute: an item still running when its parent is killed."""
    time.sleep(60)
    return x
