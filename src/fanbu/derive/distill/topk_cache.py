"""A top-k teacher logit cache: the teacher runs once over the packed windows, training reads the cache.

Per token of every packed window the cache keeps the teacher's ``k`` largest logits and their token
ids (and, optionally, the teacher's last hidden state), saved as safetensors. Full-vocabulary logits
would cost ``windows x window x vocab`` floats (49,152 per token for SmolLM2); ``k = 64`` keeps the
mass that matters at 0.13% of that.

The approximation (:func:`topk_kd_loss`): the teacher distribution is truncated to its top ``k`` and
renormalised, ``p~_i = softmax(z_topk / T)_i``; the student keeps its full softmax ``q``; the loss is
``T^2 * sum_{i in top k} p~_i (log p~_i - log q_i)`` = ``KL(p~ || q)``, since ``p~`` is zero outside the
top ``k``. With ``k = vocab`` it is exactly the live-teacher KL of :func:`.causal_lm.token_kd_loss`. For
smaller ``k`` the teacher's tail mass (usually a few percent at ``k = 64``) is dropped and spread over
the top ``k`` in proportion; the student is still penalised for mass outside the top ``k`` because
``q`` is normalised over the whole vocabulary (Sparse KD, e.g. Raman et al. 2023).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fanbu.errors import CheckpointError, ModelError
from fanbu.io import sha256_bytes
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.terms import Batch

CACHE_FILE = "teacher_topk.safetensors"
CACHE_FORMAT = "topk-1"


def windows_fingerprint(windows: Tensor) -> str:
    """sha256 of the packed token ids, so a cache is never read against other windows."""
    return sha256_bytes(windows.to(torch.int64).contiguous().numpy().tobytes())


@dataclass
class TopKCache:
    """Teacher top-k logits per token of the packed windows.

    Attributes:
        values: ``(windows, window, k)`` teacher logits, largest first.
        indices: ``(windows, window, k)`` their token ids.
        hidden: ``(windows, window, teacher_hidden)`` last hidden states, or ``None``.
        fingerprint: :func:`windows_fingerprint` of the windows the rows belong to.
    """

    values: Tensor
    indices: Tensor
    hidden: Tensor | None
    fingerprint: str

    @property
    def k(self) -> int:
        """Logits kept per token."""
        return int(self.values.shape[-1])

    @classmethod
    @torch.no_grad()
    def build(
        cls, teacher: CausalLMHandle, windows: Tensor, k: int, batch_size: int = 4, hidden: bool = False
    ) -> TopKCache:
        """Run ``teacher`` once over ``(windows, window)`` token ids and keep the top ``k`` logits per token."""
        vocab = int(teacher.model.get_output_embeddings().weight.shape[0])
        if not 1 <= k <= vocab:
            raise ModelError(f"top_k={k}: the teacher has {vocab} logits per token; set 1 <= top_k <= {vocab}")
        model = teacher.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        values, indices, states = [], [], []
        try:
            for start in range(0, windows.shape[0], batch_size):
                ids = windows[start : start + batch_size].to(device)  # (batch, window)
                out = model(input_ids=ids, output_hidden_states=hidden)
                top = out.logits.float().topk(k, dim=-1)  # (batch, window, k)
                values.append(top.values.cpu())
                indices.append(top.indices.to(torch.int32).cpu())
                if hidden:
                    states.append(out.hidden_states[-1].float().cpu())  # (batch, window, hidden)
        finally:
            model.train(was_training)
        return cls(
            torch.cat(values),
            torch.cat(indices),
            torch.cat(states) if hidden else None,
            windows_fingerprint(windows),
        )

    def targets(self, index: Tensor) -> dict[str, Tensor]:
        """The cached rows of windows ``index`` as batch targets (``topk_values``, ``topk_indices``...)."""
        out = {"topk_values": self.values[index], "topk_indices": self.indices[index].long()}
        if self.hidden is not None:
            out["teacher_hidden"] = self.hidden[index]
        return out

    def check(self, windows: Tensor) -> None:
        """Raise unless the cache was built on exactly these windows."""
        if windows_fingerprint(windows) != self.fingerprint:
            raise CheckpointError(
                "the teacher cache was built on other packed windows (different text, window or tokenizer); "
                "rebuild it with TopKCache.build"
            )

    def save(self, directory: str | Path) -> Path:
        """Write ``teacher_topk.safetensors`` (tensors + format, k and fingerprint as metadata)."""
        path = Path(directory) / CACHE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"values": self.values.contiguous(), "indices": self.indices.contiguous()}
        if self.hidden is not None:
            tensors["hidden"] = self.hidden.contiguous()
        meta = {"format": CACHE_FORMAT, "k": str(self.k), "fingerprint": self.fingerprint}
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TopKCache:
        """Read a cache written by :meth:`save`."""
        path = Path(directory) / CACHE_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: no teacher cache here; build one with TopKCache.build and save it")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            raise CheckpointError(f"{path}: cache format {json.dumps(meta.get('format'))}, not {CACHE_FORMAT}")
        tensors = load_file(str(path))
        return cls(tensors["values"], tensors["indices"], tensors.get("hidden"), meta["fingerprint"])


def topk_kd_loss(student_logits: Tensor, values: Tensor, indices: Tensor, temperature: float) -> Tensor:
    """``T^2 *`` mean over tokens of ``KL(p~ || q)``, ``p~`` the renormalised teacher top-k (module docstring).

    Args:
        student_logits: ``(batch, seq, vocab)``.
        values: ``(batch, seq, k)`` teacher logits.
        indices: ``(batch, seq, k)`` their token ids.
        temperature: Softmax temperature.
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (batch, seq, vocab)
    log_q_top = log_q.gather(-1, indices)  # (batch, seq, k)
    log_p = F.log_softmax(values.float() / temperature, dim=-1)  # (batch, seq, k)
    kl = (log_p.exp() * (log_p - log_q_top)).sum(dim=-1)  # (batch, seq)
    return kl.mean() * temperature**2


class CachedLMDistillation:
    """``alpha * topk_kd_loss`` against the cached teacher rows a :class:`.packing.PackedPlan` batch carries."""

    name = "kd"

    def __init__(self, alpha: float, temperature: float) -> None:
        self.alpha = alpha
        self.temperature = temperature

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        values, indices = batch.targets["topk_values"], batch.targets["topk_indices"]
        return {"kd": self.alpha * topk_kd_loss(outputs["logits"], values, indices, self.temperature)}


class HiddenMatch:
    """``weight * MSE(W h_student, h_teacher)`` of the last hidden states; ``W`` is learned (widths may differ)."""

    name = "hidden"

    def __init__(self, student_hidden: int, teacher_hidden: int, weight: float) -> None:
        self.weight = weight
        self.projection = nn.Linear(student_hidden, teacher_hidden, bias=False)
        if student_hidden == teacher_hidden:
            nn.init.eye_(self.projection.weight)

    def modules(self) -> list[nn.Module]:
        """The projection, trained by the loop's optimiser with the student."""
        return [self.projection]

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        student = outputs["hidden"]  # (batch, seq, student_hidden)
        teacher = batch.targets["teacher_hidden"].to(student.device)  # (batch, seq, teacher_hidden)
        projected = self.projection.to(student.device)(student.float())  # (batch, seq, teacher_hidden)
        return {"hidden": self.weight * F.mse_loss(projected, teacher.float())}


def hidden_forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """Causal-LM forward that also returns the last hidden state ``(batch, seq, hidden)``."""
    out = model(**batch.inputs, output_hidden_states=True)
    return {"logits": out.logits, "hidden": out.hidden_states[-1]}
