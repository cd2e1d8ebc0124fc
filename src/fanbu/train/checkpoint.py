"""Atomic, pickle-free training checkpoints.

A checkpoint is a directory ``step-{global_step:08d}`` holding safetensors files (model, optimiser
tensors, RNG state, strategy state, best weights) and ``state.json`` (loop state, scheduler, the
optimiser's non-tensor fields). It is assembled under a temporary name and renamed into place, then
``latest`` is rewritten atomically to name it, so a crash at any moment leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from fanbu.errors import CheckpointError
from fanbu.io import atomic_directory, atomic_write_json, atomic_write_text

LATEST = "latest"


@dataclass
class CheckpointData:
    """What a checkpoint restores."""

    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    loop: dict[str, Any]
    rng: Tensor
    strategies: dict[str, dict[str, Tensor]]
    best_model: dict[str, Tensor] | None


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and a JSON-able rest."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, slots in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    return {"state": state, "param_groups": rest["param_groups"]}


def _contiguous(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def save_checkpoint(root: Path, data: CheckpointData, keep: int = 1) -> Path:
    """Write a checkpoint under ``root`` atomically and prune older ones beyond ``keep``."""
    step = int(data.loop["global_step"])
    final = root / f"step-{step:08d}"
    optim_tensors, optim_rest = _flatten_optimizer(data.optimizer)
    with atomic_directory(final, overwrite=True) as tmp:
        save_file(_contiguous(data.model), str(tmp / "model.safetensors"))
        save_file(optim_tensors, str(tmp / "optimizer.safetensors"))
        save_file({"torch": data.rng.contiguous()}, str(tmp / "rng.safetensors"))
        if data.best_model is not None:
            save_file(_contiguous(data.best_model), str(tmp / "best.safetensors"))
        for name, tensors in data.strategies.items():
            if tensors:
                save_file(_contiguous(tensors), str(tmp / f"strategy-{name}.safetensors"))
        state = {
            "loop": data.loop,
            "scheduler": data.scheduler,
            "optimizer": optim_rest,
            "strategies": sorted(n for n, t in data.strategies.items() if t),
            "format": 1,
        }
        atomic_write_json(tmp / "state.json", state)
    atomic_write_text(root / LATEST, final.name + "\n")
    checkpoints = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The directory ``latest`` names, or ``None`` when the run has no checkpoint yet."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise CheckpointError(
            f"{pointer} names {path.name}, which does not exist; delete {root} to start the run afresh"
        )
    return path


def _load(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: checkpoint file is corrupt or truncated ({exc}); delete {path.parent} to resume "
            "from the checkpoint before it, or start afresh"
        ) from exc


def load_checkpoint(path: Path) -> CheckpointData:
    """Read a checkpoint directory written by :func:`save_checkpoint`."""
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{state_file}: unreadable checkpoint state ({exc}); delete {path}") from exc
    best = path / "best.safetensors"
    return CheckpointData(
        model=_load(path / "model.safetensors"),
        optimizer=_unflatten_optimizer(_load(path / "optimizer.safetensors"), state["optimizer"]),
        scheduler=state["scheduler"],
        loop=state["loop"],
        rng=_load(path / "rng.safetensors")["torch"],
        strategies={n: _load(path / f"strategy-{n}.safetensors") for n in state["strategies"]},
        best_model=_load(best) if best.exists() else None,
    )


def rng_state() -> Tensor:
    """The CPU torch RNG state as a uint8 tensor."""
    return torch.get_rng_state()
