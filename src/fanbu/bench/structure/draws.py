"""Every draw of a structure section in one scratch directory, summarised: what the sections share."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fanbu.train.config import TrainConfig


class DrawSettings(Protocol):
    """A section's settings: its first seed and how many draws."""

    seed: int
    seeds: int

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


def run_draws(
    settings: DrawSettings,
    draw: Callable[[Any, int, Callable[[str], None], Path], dict[str, Any]],
    summarise: Callable[[list[dict[str, Any]]], dict[str, Any]],
    prefix: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``draw(settings, seed, log, work_dir)`` for seeds ``settings.seed ..``; the summary, each draw under
    ``runs``, the settings and the seconds taken."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        draws = [
            draw(settings, settings.seed + i, log, Path(tmp) / f"seed{i}") for i in range(settings.seeds)
        ]
    return {
        **summarise(draws),
        "runs": draws,
        "settings": settings.model_dump(mode="json"),
        "seconds": time.perf_counter() - started,
    }


def draw_train(epochs: int, seed: int) -> TrainConfig:
    """The loop of large v0 and of the experts in a structure draw (no dropout, as every bench model)."""
    return TrainConfig(
        epochs=epochs, batch_size=16, lr=1e-4, warmup_ratio=0.06, dropout=0.0, seed=seed, progress=False
    )
