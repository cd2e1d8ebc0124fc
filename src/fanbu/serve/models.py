"""Models the server answers with: registry refs (``name`` or ``name:v3``) resolved and loaded once.

A servable model is a classifier directory of a kind in :data:`~fanbu.models.CLASSIFIER_KINDS` (an
encoder or an MoE encoder with named heads): a saved handle, or a derive ``quantize`` deployment
(loaded on the configured runtime, ``onnx_int8`` by default). References resolve through the
:class:`~fanbu.registry.workspace.Workspace`; a model's heads, their label names and its token budget
come from its ``handle.json``.

Several compute threads may run one loaded model at once, so a model is made ready for that when it
is loaded: a torch model is put in eval mode for good (``predict_proba`` then never switches it back
to training under another thread's feet) and one text is run through it, which also builds the
tokenizer's caches before two threads can race to build them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fanbu.errors import FanbuError, ModelError
from fanbu.models.encoder import HANDLE_FILE, EncoderHandle, read_handle_settings
from fanbu.models.loading import CLASSIFIER_KINDS
from fanbu.models.loading import load_predictor as load_predictor_at
from fanbu.models.predict import Predictor
from fanbu.registry import ModelRecord, Registry
from fanbu.registry.workspace import UnknownModelError, Workspace, parse_ref

__all__ = [
    "ModelPool",
    "NotServableError",
    "Served",
    "UnknownModelError",
    "load_predictor",
    "parse_ref",
    "read_labels",
    "read_settings",
]


class NotServableError(FanbuError):
    """The model exists but is not a classifier (encoder or MoE encoder with heads) the server can run."""


def read_settings(record: ModelRecord) -> dict[str, Any]:
    """The ``handle.json`` of a registered classifier (labels per head, ``max_length``, ...)."""
    path = Path(record.path) / HANDLE_FILE
    if record.kind == "causal_lm":
        raise NotServableError(
            f"model {record.id} is a causal language model: it does not classify; send it to "
            "/v1/generate, /v1/completions or /v1/chat/completions"
        )
    if record.kind not in CLASSIFIER_KINDS or not path.is_file():
        raise NotServableError(
            f"model {record.id} ({record.kind} at {record.path}) is not an encoder classifier directory; "
            f"serve a saved model of kind {' or '.join(CLASSIFIER_KINDS)}, or a quantize deployment"
        )
    try:
        settings = read_handle_settings(Path(record.path))
        max_length = int(settings["max_length"])
    except (ModelError, ValueError, TypeError) as exc:
        raise NotServableError(f"{path}: unreadable ({exc}); re-save model {record.id}") from None
    return {**settings, "max_length": max_length}


def read_labels(record: ModelRecord) -> dict[str, list[str]]:
    """Head name -> label names of a registered classifier, read from its ``handle.json``."""
    labels = read_settings(record)["labels"]
    if not labels:
        raise NotServableError(f"model {record.id} has no heads; add one with handle.add_head and re-save")
    return {str(head): [str(n) for n in names] for head, names in labels.items()}


def load_predictor(record: ModelRecord, runtime: str = "onnx_int8", threads: int | None = None) -> Predictor:
    """Load ``record``'s directory: a deployment on ``runtime`` (``threads`` intra-op), else its saved handle."""
    read_labels(record)
    try:
        return load_predictor_at(record.path, runtime, threads)
    except ModelError as exc:
        raise NotServableError(f"model {record.id}: {exc}") from None


@dataclass(frozen=True)
class Served:
    """A loaded model: its record, its predictor, its heads' label names and its token budget."""

    record: ModelRecord
    predictor: Predictor
    labels: dict[str, list[str]]
    max_length: int


def ready(predictor: Predictor, head: str) -> None:
    """Make ``predictor`` safe to run from several threads at once (see the module docstring)."""
    if isinstance(predictor, EncoderHandle):
        predictor.model.eval()
    predictor.predict_proba(["warm up"], head, 1)


class ModelPool:
    """Loads each referenced model once; safe to call from several threads.

    A ref without a version is pinned to the version it resolved to when first used, until a reload
    (:mod:`fanbu.serve.reload`) re-resolves it and :meth:`pin` points it at a newer one; a version no
    ref points to any more is then dropped by :meth:`release`. ``threads`` is the intra-op thread count
    of both runtimes: onnxruntime's per session, torch's for the whole process (set here, when the
    pool is made).
    """

    def __init__(self, registry: Registry, runtime: str = "onnx_int8", threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.registry = registry
        self.workspace = Workspace(registry)
        self.runtime = runtime
        self.threads = threads
        self._by_ref: dict[str, Served] = {}
        self._by_id: dict[str, Served] = {}
        self._lock = threading.Lock()

    def cached(self, ref: str) -> Served | None:
        """The loaded model for ``ref``, or ``None`` when it has not been loaded yet."""
        return self._by_ref.get(ref)

    def get(self, ref: str) -> Served:
        """Resolve and load ``ref`` (once).

        Raises:
            UnknownModelError: nothing is registered under that name or version.
            NotServableError: the model is not a classifier (encoder or MoE encoder with heads).
        """
        served = self._by_ref.get(ref)
        if served is not None:
            return served
        with self._lock:
            if ref in self._by_ref:
                return self._by_ref[ref]
            record = self.workspace.resolve(ref)
            served = self._by_id.get(record.id) or self._load(record)
            self._by_id[served.record.id] = served
            self._by_ref[ref] = served
            return served

    def load(self, record: ModelRecord) -> Served:
        """``record`` loaded and warmed up (or the copy already loaded), without pointing any ref at it.

        Raises:
            NotServableError: the model is not a classifier the server can run.
        """
        served = self._by_id.get(record.id)
        return served if served is not None else self._load(record)

    def pin(self, ref: str, served: Served) -> None:
        """Point ``ref`` at ``served`` (a reload's swap); later :meth:`get` calls return it."""
        with self._lock:
            self._by_id.setdefault(served.record.id, served)
            self._by_ref[ref] = served

    def release(self, model_id: str) -> bool:
        """Drop ``model_id`` unless a ref still points to it; whether it was dropped."""
        with self._lock:
            if model_id not in self._by_id or any(s.record.id == model_id for s in self._by_ref.values()):
                return False
            del self._by_id[model_id]
            return True

    def loaded(self) -> list[str]:
        """Ids of the loaded models."""
        return sorted(self._by_id)

    def _load(self, record: ModelRecord) -> Served:
        predictor = load_predictor(record, self.runtime, self.threads)
        settings = read_settings(record)  # handle.json, read once
        ready(predictor, next(iter(settings["labels"])))
        return Served(record, predictor, settings["labels"], settings["max_length"])
