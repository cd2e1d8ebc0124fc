"""The optional libraries of the ``rl`` extra, imported where they are first needed.

Gymnasium and Stable-Baselines3 are declared in the ``rl`` extra (installed by ``make test`` through
``dev``); a missing one is a :class:`~fanbu.errors.ConfigError` that says how to install it, not an
``ImportError`` three frames deep.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fanbu.errors import ConfigError

INSTALL = "pip install 'fanbu[rl]' (gymnasium and stable-baselines3)"


def require(module: str) -> ModuleType:
    """Import ``module`` (``gymnasium``, ``stable_baselines3``...), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"reinforcement learning needs {module!r}, which cannot be imported ({exc}); "
                          f"{INSTALL}") from None
