"""Seeding every random number generator the loop touches, and the rest of a reproducible set-up.

Same seed, same numbers, on one machine: :func:`deterministic` seeds Python, NumPy and torch, asks torch
for deterministic kernels (``warn_only``: an operation without one warns instead of failing) and fixes
torch's intra-op thread count, which changes the order of float sums and so the last bits of every
reduction. It returns what it set (:func:`environment`), for the run's record.

A fresh process does not start from a fixed torch seed: anything drawn from the global generators
before :func:`deterministic` runs (a new head, LoRA's initialisation) differs from process to process.
Such draws are seeded where they happen (``EncoderHandle.add_head(..., seed=)``; each executor item
starts from the same state).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and, when present, CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # seeds every CUDA device too


def environment() -> dict[str, Any]:
    """What decides the last bits of a run's numbers besides its seed: torch's thread count, its version,
    and whether deterministic kernels are on."""
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def deterministic(seed: int, threads: int | None = None) -> dict[str, Any]:
    """Seed every generator, turn on deterministic kernels, fix the thread count; return :func:`environment`.

    Args:
        seed: Seeds Python's, NumPy's and torch's global generators.
        threads: torch's intra-op threads from now on, for this process. ``None`` keeps the count the
            process has: torch's default (the machine's physical cores, or ``OMP_NUM_THREADS``), or what
            the command set (an executor's worker gets its share of the cores, a test one thread). That
            count is fixed for one machine, one environment and one command, and it is recorded; forcing
            another one here would undo the executor's split of the cores among its workers.

    The settings stay on for the rest of the process (torch's switches are global).
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    # cuBLAS is deterministic only with a fixed workspace; read when its handle is first made
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    seed_everything(seed)
    return environment()
