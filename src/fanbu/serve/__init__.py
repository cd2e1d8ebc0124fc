"""Serving: registered small models (and an edge-to-large cascade) behind a FastAPI app, every answer logged.

Classifiers answer ``POST /v1/predict``; causal language models answer ``POST /v1/generate`` and the
OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions``, whole or streamed, alone or as a
small-to-large LM cascade (:mod:`fanbu.serve.generation`).

``create_app`` builds the app; ``serve`` runs it under uvicorn (``fanbu serve``). Predictions and
feedback go into the logging store (:mod:`fanbu.collect`) before the response is sent. Model references
resolve through :class:`fanbu.registry.workspace.Workspace` (``UnknownModelError`` and ``parse_ref``
are its own, re-exported here). ``POST /v1/models/reload`` (or ``watch_seconds``) swaps a served name to
its newest version without a restart and without losing a request (:mod:`fanbu.serve.reload`). Names
are imported on first use, so that a load-generating process can import :mod:`fanbu.serve.loadtest`
without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "fanbu.serve.app",
    "MicroBatcher": "fanbu.serve.batcher",
    "Overloaded": "fanbu.serve.batcher",
    "Route": "fanbu.serve.cascade",
    "tune_threshold": "fanbu.serve.cascade",
    "Batching": "fanbu.serve.config",
    "CascadeConfig": "fanbu.serve.config",
    "Limits": "fanbu.serve.config",
    "ServeConfig": "fanbu.serve.config",
    "GenerationLimits": "fanbu.serve.lm_config",
    "LMCascadeConfig": "fanbu.serve.lm_config",
    "LMRoute": "fanbu.serve.lm_cascade",
    "LMPool": "fanbu.serve.lm_models",
    "NotAnLMError": "fanbu.serve.lm_models",
    "ModelPool": "fanbu.serve.models",
    "NotServableError": "fanbu.serve.models",
    "UnknownModelError": "fanbu.registry.workspace",
    "parse_ref": "fanbu.registry.workspace",
    "TOKEN_ENV": "fanbu.serve.security",
    "resolve_token": "fanbu.serve.security",
    "serve": "fanbu.serve.server",
}

__all__ = [
    "TOKEN_ENV",
    "Batching",
    "CascadeConfig",
    "GenerationLimits",
    "LMCascadeConfig",
    "LMPool",
    "LMRoute",
    "Limits",
    "MicroBatcher",
    "ModelPool",
    "NotAnLMError",
    "NotServableError",
    "Overloaded",
    "Route",
    "ServeConfig",
    "UnknownModelError",
    "create_app",
    "parse_ref",
    "resolve_token",
    "serve",
    "tune_threshold",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fanbu.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
