"""The teacher's per-example outputs for distillation: cached once (:class:`TeacherCache`) or live.

Both sources are indexed by ``(task, example indices)``, the indices a :class:`fanbu.train.Batch`
carries, and both tokenise with the **teacher's** tokenizer: after vocabulary trimming the student's
token ids mean nothing to the teacher.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from fanbu.errors import CheckpointError, ModelError
from fanbu.io import atomic_write_bytes, sha256_json
from fanbu.models.encoder import EncoderHandle

CACHE_FORMAT = "1"


class TeacherOutputs(Protocol):
    """What distillation terms need from a teacher, per batch."""

    def logits(self, task: str, indices: Tensor) -> Tensor:
        """Teacher logits ``(batch, num_labels)`` of head ``task`` for these examples."""
        ...

    def pooled(self, task: str, indices: Tensor) -> Tensor:
        """Teacher pooled embeddings ``(batch, teacher_hidden)`` for these examples."""
        ...


def texts_fingerprint(texts: Sequence[str]) -> str:
    """The fingerprint a cache is keyed by: sha256 of the texts (in order) as canonical JSON."""
    return sha256_json(list(texts))


def teacher_fingerprint(teacher: EncoderHandle) -> str:
    """sha256 of everything that shapes the teacher's outputs: weights, vocabulary, max_length."""
    digest = hashlib.sha256()
    for name, value in sorted(teacher.model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        if not isinstance(value, Tensor):  # e.g. packed parameters of a quantised layer
            digest.update(repr(value).encode("utf-8"))
            continue
        tensor = value.dequantize() if value.is_quantized else value
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(
        sha256_json(
            [teacher.max_length, teacher.truncation, sorted(teacher.tokenizer.get_vocab().items())]
        ).encode()
    )
    return digest.hexdigest()


def _check_heads(teacher: EncoderHandle, tasks: Mapping[str, Sequence[str]]) -> None:
    missing = [task for task in tasks if task not in teacher.labels]
    if missing:
        raise ModelError(
            f"the teacher has no head for tasks {missing} (heads: {', '.join(teacher.labels) or 'none'}); "
            "fine-tune the teacher on those tasks first"
        )


class TeacherCache:
    """Teacher logits (and pooled states) computed once per ``(task, example)`` and kept in memory.

    Args:
        logits: Task -> ``(n, num_labels)`` logits.
        pooled: Task -> ``(n, hidden)`` pooled states, or empty when built with ``hidden=False``.
        fingerprints: Task -> fingerprint of the texts the rows belong to.
        teacher: Fingerprint of the teacher that computed them (:func:`teacher_fingerprint`), if known.
    """

    def __init__(
        self,
        logits: Mapping[str, Tensor],
        pooled: Mapping[str, Tensor],
        fingerprints: Mapping[str, str],
        teacher: str | None = None,
    ) -> None:
        self._logits = dict(logits)
        self._pooled = dict(pooled)
        self.fingerprints = dict(fingerprints)
        self.teacher = teacher

    @classmethod
    def build(
        cls,
        teacher: EncoderHandle,
        tasks: Mapping[str, Sequence[str]],
        batch_size: int = 64,
        hidden: bool = True,
    ) -> TeacherCache:
        """Run the teacher once over every task's texts (task name = head name)."""
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        _check_heads(teacher, tasks)
        logits: dict[str, Tensor] = {}
        pooled: dict[str, Tensor] = {}
        for task, texts in tasks.items():
            if len(texts) == 0:
                raise ModelError(f"task {task!r} has no texts to run the teacher on; drop it or add texts")
            features, outputs = teacher.encode(list(texts), [task], batch_size=batch_size)
            logits[task] = outputs[task]  # (n, labels)
            if hidden:
                pooled[task] = features  # (n, hidden)
        fingerprints = {task: texts_fingerprint(texts) for task, texts in tasks.items()}
        return cls(logits, pooled, fingerprints, teacher_fingerprint(teacher))

    @property
    def tasks(self) -> list[str]:
        """The tasks the cache holds."""
        return list(self._logits)

    @property
    def has_hidden(self) -> bool:
        """Whether pooled states were cached (``hidden=True``) for every task."""
        return set(self._pooled) == set(self._logits)

    def _rows(self, table: Mapping[str, Tensor], task: str, indices: Tensor, what: str) -> Tensor:
        if task not in table:
            if what == "pooled" and task in self._logits:
                raise ModelError(
                    "the teacher cache was built without pooled states; rebuild it with "
                    "TeacherCache.build(..., hidden=True) to use hidden-state distillation"
                )
            raise ModelError(
                f"the teacher cache has no outputs for task {task!r} (tasks: {', '.join(self._logits)}); "
                "rebuild it with TeacherCache.build over every training task"
            )
        rows = table[task]
        if int(indices.max()) >= rows.shape[0] or int(indices.min()) < 0:
            raise ModelError(
                f"task {task!r}: example index {int(indices.max())} is outside the cache's {rows.shape[0]} "
                "examples; rebuild the cache for the current training texts"
            )
        return rows[indices.cpu()].to(indices.device)

    def logits(self, task: str, indices: Tensor) -> Tensor:
        """Cached logits ``(batch, num_labels)`` of these examples."""
        return self._rows(self._logits, task, indices, "logits")

    def pooled(self, task: str, indices: Tensor) -> Tensor:
        """Cached pooled states ``(batch, hidden)`` of these examples."""
        return self._rows(self._pooled, task, indices, "pooled")

    def check(
        self,
        tasks: Mapping[str, Sequence[str]],
        source: str = "the teacher cache",
        teacher: EncoderHandle | None = None,
    ) -> None:
        """Raise unless the cache holds every task with exactly these texts (and, if given, this teacher)."""
        if teacher is not None and self.teacher is not None and self.teacher != teacher_fingerprint(teacher):
            raise CheckpointError(
                f"{source} was computed by another teacher (different weights, vocabulary or max_length); "
                "rebuild it with TeacherCache.build(teacher, ...) and save it again"
            )
        for task, texts in tasks.items():
            found = self.fingerprints.get(task)
            if found is None:
                raise CheckpointError(
                    f"{source} has no outputs for task {task!r} (tasks: {', '.join(self.fingerprints)}); "
                    "rebuild it with TeacherCache.build over the current training texts"
                )
            if found != texts_fingerprint(texts):
                raise CheckpointError(
                    f"{source} was built for other texts of task {task!r} (fingerprint {found[:12]}… "
                    f"differs from {texts_fingerprint(texts)[:12]}…); rebuild it with TeacherCache.build "
                    "and save it again"
                )

    def save(self, path: str | Path) -> Path:
        """Write the cache to one safetensors file (atomically), fingerprints in its metadata."""
        tensors = {f"logits/{t}": v.contiguous() for t, v in self._logits.items()}
        tensors.update({f"pooled/{t}": v.contiguous() for t, v in self._pooled.items()})
        metadata = {"format": CACHE_FORMAT, "fingerprints": json.dumps(self.fingerprints, sort_keys=True)}
        if self.teacher is not None:
            metadata["teacher"] = self.teacher
        return atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(
        cls, path: str | Path, tasks: Mapping[str, Sequence[str]], teacher: EncoderHandle | None = None
    ) -> TeacherCache:
        """Read a saved cache and check it was built for exactly these tasks' texts (and this teacher)."""
        file = Path(path)
        if not file.is_file():
            raise CheckpointError(
                f"{file}: no teacher cache here; build one with TeacherCache.build and save it"
            )
        try:
            with safe_open(str(file), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(file))
            fingerprints = json.loads(metadata["fingerprints"])
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{file}: not a readable teacher cache ({exc}); delete it and rebuild with TeacherCache.build"
            ) from None
        logits = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("logits/")}
        pooled = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("pooled/")}
        cache = cls(logits, pooled, fingerprints, metadata.get("teacher"))
        cache.check(tasks, source=str(file), teacher=teacher)
        keep = list(tasks)
        return cls(
            {t: logits[t] for t in keep},
            {t: pooled[t] for t in keep if t in pooled},
            {t: fingerprints[t] for t in keep},
            cache.teacher,
        )


class LiveTeacher:
    """Teacher outputs computed on the fly for each batch (``cache_teacher: false``).

    The last batch's outputs are kept, so the logit and hidden terms of one step share a forward pass.
    """

    def __init__(self, teacher: EncoderHandle, tasks: Mapping[str, Sequence[str]]) -> None:
        _check_heads(teacher, tasks)
        self.teacher = teacher
        self.tasks = {task: list(texts) for task, texts in tasks.items()}
        self._last: tuple[str, tuple[int, ...], Tensor, Tensor] | None = None

    def _outputs(self, task: str, indices: Tensor) -> tuple[Tensor, Tensor]:
        key = tuple(int(i) for i in indices.tolist())
        if self._last is None or self._last[:2] != (task, key):
            texts = self.tasks[task]
            pooled, outputs = self.teacher.encode([texts[i] for i in key], [task], batch_size=len(key))
            logits = outputs[task]
            self._last = (task, key, logits, pooled)
        return self._last[2].to(indices.device), self._last[3].to(indices.device)

    def logits(self, task: str, indices: Tensor) -> Tensor:
        """Teacher logits ``(batch, num_labels)``."""
        return self._outputs(task, indices)[0]

    def pooled(self, task: str, indices: Tensor) -> Tensor:
        """Teacher pooled states ``(batch, hidden)``."""
        return self._outputs(task, indices)[1]
