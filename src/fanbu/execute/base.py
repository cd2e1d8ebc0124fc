"""What every executor shares: the protocol, the error naming the failed item, the pickling check."""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from fanbu.errors import FanbuError

T = TypeVar("T")
R = TypeVar("R")


class ExecutionError(FanbuError):
    """An item failed (or could not be sent) while an executor mapped a function over items.

    Attributes:
        name: The failed item's name (``names[i]``, or ``item i``).
        index: Its position in the items.
        original: The original error as ``Type: message``.
        remote_traceback: The traceback from the worker, when the item ran in another process.
    """

    def __init__(
        self,
        message: str,
        name: str | None = None,
        index: int | None = None,
        original: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.name = name
        self.index = index
        self.original = original
        self.remote_traceback = remote_traceback


class Executor(Protocol):
    """Maps a function over items and returns the results in input order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T], names: Sequence[str] | None = None) -> list[R]:
        """``[fn(item) for item in items]``, run by this executor; a failure raises ExecutionError."""
        ...


def item_names(items: Sequence[Any], names: Sequence[str] | None) -> list[str]:
    """The names used in errors: ``names`` when given (one per item), else ``item 0``, ``item 1``..."""
    if names is None:
        return [f"item {i}" for i in range(len(items))]
    if len(names) != len(items):
        raise ExecutionError(f"got {len(names)} names for {len(items)} items; give one name per item")
    return [str(n) for n in names]


def item_failed(name: str, index: int, original: str, remote_traceback: str = "") -> ExecutionError:
    """The error for item ``name`` that raised ``original`` (``Type: message``)."""
    return ExecutionError(
        f"{name} failed: {original}",
        name=name,
        index=index,
        original=original,
        remote_traceback=remote_traceback,
    )


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception."""
    return f"{type(exc).__name__}: {exc}"


def require_importable(fn: Callable[..., Any], executor: str) -> None:
    """Refuse a function other processes cannot import (a lambda, a nested function), explaining why.

    Functions go to worker processes (and Ray workers) by reference: module and name. Only top-level
    callables (a module-level ``def``, a ``functools.partial`` of one, an instance of a top-level
    class) can be sent that way.
    """
    label = getattr(fn, "__qualname__", None) or type(fn).__name__
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - pickle raises PicklingError, AttributeError, TypeError
        kind = "a lambda" if "<lambda>" in label else ("a nested function" if "<locals>" in label else "")
        what = f"{label!r} ({kind})" if kind else repr(label)
        raise ExecutionError(
            f"{executor} cannot send {what} to other processes: functions run by a multi-process or Ray "
            "executor must be importable top-level callables (a def at module level, or functools.partial "
            f"of one); move it to a module's top level, or use LocalExecutor(workers=1). (pickle: {exc})"
        ) from None


ITEM_SEED = 0


def fresh_generators(seed: int = ITEM_SEED) -> None:
    """Seed Python's, NumPy's and torch's global generators before an item runs.

    Every item then starts from the same state whichever process runs it and whatever ran there before:
    a fresh process's torch generator starts from a different seed each time, and what an item draws
    before its own training seeds them (a new head, LoRA's initialisation) would follow it.
    """
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def call(fn: Callable[[T], R], item: T) -> tuple[str, Any, str]:
    """Run ``fn(item)`` in a worker: ``("ok", result, "")`` or ``("error", "Type: message", traceback)``.

    Failures come back as text, so an exception that cannot be pickled still reaches the caller.
    """
    try:
        fresh_generators()
        return "ok", fn(item), ""
    except Exception as exc:  # noqa: BLE001 - every item error is reported to the caller by name
        return "error", describe(exc), traceback.format_exc()
