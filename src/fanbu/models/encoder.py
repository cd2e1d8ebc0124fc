"""Encoder handles: a transformer encoder with one linear head per task, over mean-pooled tokens.

The encoder is saved with ``save_pretrained`` (safetensors), so a saved directory loads with plain
``transformers.AutoModel.from_pretrained``; the heads live beside it in ``heads.safetensors`` and their
label names in ``handle.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import ModelError
from fanbu.io import atomic_write_bytes, atomic_write_json
from fanbu.models.artefact import (
    Provenance,
    dtype_mismatches,
    expect_kind,
    model_directory,
    read_json,
    write_provenance,
)
from fanbu.models.predict import check_request, length_runs, predict_in_runs
from fanbu.models.sources import (
    ResolvedSource,
    check_local_weights,
    check_max_length,
    load_pretrained,
    load_saved_pretrained,
    resolve_source,
)
from fanbu.models.tiny import tiny_tokenizer
from fanbu.models.tokenize import TRUNCATIONS, Truncation, encode_texts

HEADS_FILE = "heads.safetensors"
HANDLE_FILE = "handle.json"
SUBNETWORK_JSON = "subnetwork.json"
SUBNETWORK_FILE = "subnetwork.safetensors"


def head_seed(seed: int, name: str) -> int:
    """The torch seed of head ``name`` in a run seeded ``seed``: stable across processes and machines
    (Python's ``hash`` of a string is not), different for each head."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class EncoderClassifier(nn.Module):
    """A transformer encoder (BERT family, any AutoModel) with one linear head per task, mean pooling."""

    def __init__(
        self, encoder: PreTrainedModel, heads: Mapping[str, int] | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict()
        self.dropout = nn.Dropout(dropout)
        for name, num_labels in (heads or {}).items():
            self.add_head(name, num_labels)

    @property
    def hidden_size(self) -> int:
        """Width of the pooled embedding."""
        return int(self.encoder.config.hidden_size)

    def add_head(self, name: str, num_labels: int, seed: int | None = None) -> None:
        """Add a linear head ``hidden -> num_labels`` on the encoder's device and dtype.

        ``seed``: initialise it from ``(seed, name)`` alone, leaving the global generators untouched, so
        that it is the same head whatever ran before in the process (``None``: draw from torch's global
        generator as it stands, which in a fresh process is seeded differently each time).
        """
        if not name or "." in name:
            raise ModelError(f"head name {name!r} must be non-empty and contain no '.'; use '_' instead")
        if name in self.heads:
            raise ModelError(
                f"head {name!r} already exists (heads: {', '.join(self.heads)}); pick another name"
            )
        if num_labels < 1:
            raise ModelError(f"head {name!r}: num_labels must be at least 1, got {num_labels}")
        reference = next(self.encoder.parameters())
        if seed is None:
            head = nn.Linear(self.hidden_size, num_labels)
        else:
            with torch.random.fork_rng(devices=[]):  # built on the CPU: only its generator is forked
                torch.manual_seed(head_seed(seed, name))
                head = nn.Linear(self.hidden_size, num_labels)
        self.heads[name] = head.to(device=reference.device, dtype=reference.dtype)

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Masked mean of the last hidden states: ``(batch, hidden)``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        summed = (hidden * mask).sum(dim=1)  # (batch, hidden)
        return summed / mask.sum(dim=1).clamp(min=1.0)  # (batch, hidden)

    def freeze_lower(self, layers: int) -> None:
        """Stop gradients to the embeddings and the lowest ``layers`` encoder layers (0: embeddings only).

        Raises ModelError for an encoder without BERT-style ``embeddings`` and ``encoder.layer``.
        """
        embeddings = getattr(self.encoder, "embeddings", None)
        stack = getattr(getattr(self.encoder, "encoder", None), "layer", None)
        if not isinstance(embeddings, nn.Module) or not isinstance(stack, nn.ModuleList):
            raise ModelError(
                f"cannot freeze lower layers of {type(self.encoder).__name__}: it has no BERT-style "
                "embeddings and encoder.layer; set frozen_layers: null"
            )
        if not 0 <= layers <= len(stack):
            raise ModelError(f"frozen_layers {layers} is outside 0..{len(stack)} (the encoder's layers)")
        for module in [embeddings, *stack[:layers]]:
            module.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, head: str) -> Tensor:
        """Logits ``(batch, num_labels)`` of one head."""
        if head not in self.heads:
            known = ", ".join(self.heads) or "none yet (add one with add_head)"
            raise ModelError(f"unknown head {head!r}; heads: {known}")
        pooled = self.dropout(self.embed(input_ids, attention_mask))  # (batch, hidden)
        return self.heads[head](pooled)  # (batch, num_labels)


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, truncation: Truncation = "head"
) -> dict[str, Tensor]:
    """Pad and truncate ``texts`` to ``max_length``: ids and attention mask, each ``(batch, seq)``."""
    ids, mask = encode_texts(tokenizer, texts, max_length, truncation)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


@dataclass
class Sidecar:
    """JSON metadata and tensors a handle keeps beside its weights: a pruned student's record of where
    it sits in the large model (built and read by :mod:`fanbu.derive.prune.subnetwork`)."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]


class EncoderHandle:
    """An :class:`EncoderClassifier` with its tokenizer and the label names of each head.

    ``subnetwork``: saved as ``subnetwork.json`` / ``subnetwork.safetensors`` and read back on load.
    """

    kind = "encoder"
    subnetwork: Sidecar | None = None

    def __init__(
        self,
        model: EncoderClassifier,
        tokenizer: PreTrainedTokenizerBase,
        labels: Mapping[str, Sequence[str]] | None = None,
        max_length: int = 256,
        provenance: Provenance | None = None,
        truncation: Truncation = "head",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels: dict[str, list[str]] = {name: list(names) for name, names in (labels or {}).items()}
        self.max_length = max_length
        if truncation not in TRUNCATIONS:
            raise ModelError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
        self.truncation: Truncation = truncation
        self.provenance = provenance
        missing = sorted(set(model.heads) ^ set(self.labels))
        if missing:
            raise ModelError(f"heads and label names disagree on {missing}; give label names for every head")

    @classmethod
    def from_source(cls, source: str, max_length: int = 256) -> EncoderHandle:
        """Load an encoder (no heads yet) from ``package:NAME``, a local directory or a hub id.

        Any Hugging Face directory works, a fanbu-saved one included (its heads are then ignored: use
        :meth:`load` to keep them).
        """
        resolved = resolve_source(source)
        if resolved.gguf_file is not None:
            raise ModelError(f"{source}: GGUF files hold causal LMs; load it with CausalLMHandle.from_source")
        check_local_weights(resolved)
        encoder = load_pretrained(
            AutoModel.from_pretrained, resolved, use_safetensors=True, dtype=torch.float32
        )
        check_max_length(max_length, encoder.config, source)
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolved)
        return cls(EncoderClassifier(encoder), tokenizer, max_length=max_length)

    @classmethod
    def tiny(
        cls,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 64,
        max_length: int = 64,
        seed: int = 0,
    ) -> EncoderHandle:
        """A random BERT with the in-memory tiny tokenizer, for tests and dry runs."""
        tokenizer = tiny_tokenizer(model_max_length=max_length)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_length,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = BertModel(config)
        return cls(EncoderClassifier(encoder), tokenizer, max_length=max_length)

    def add_head(self, name: str, label_names: Sequence[str], seed: int | None = None) -> None:
        """Add a classification head whose outputs are ``label_names`` (in order).

        ``seed``: initialise it from ``(seed, name)`` only (see :meth:`EncoderClassifier.add_head`).
        """
        names = [str(n) for n in label_names]
        if len(set(names)) != len(names) or not names:
            raise ModelError(f"head {name!r}: label names must be non-empty and distinct, got {names}")
        self.model.add_head(name, len(names), seed=seed)
        self.labels[name] = names

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Padded, truncated ``input_ids`` and ``attention_mask``, each ``(batch, seq)``."""
        return tokenize_texts(self.tokenizer, texts, self.max_length, self.truncation)

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], heads: Sequence[str] = (), batch_size: int = 64
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Pooled features ``(n, hidden)`` and each of ``heads``' logits ``(n, labels)`` in eval mode.

        Float32 on the CPU, rows in the order of ``texts`` (batched in runs of similar length).
        """
        missing = [h for h in heads if h not in self.labels]
        if missing:
            raise ModelError(f"unknown heads {missing}; heads: {', '.join(self.labels) or 'none yet'}")
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        model = self.model
        device = next(model.parameters()).device
        features = torch.zeros(len(texts), int(model.hidden_size))  # (n, hidden)
        out = {h: torch.zeros(len(texts), len(self.labels[h])) for h in heads}  # each (n, labels)
        was_training = model.training
        model.eval()
        try:
            for run in length_runs(texts, self.max_length, batch_size):
                inputs = {k: v.to(device) for k, v in self.tokenize([texts[i] for i in run]).items()}
                pooled = model.embed(**inputs)  # (batch, hidden); eval mode: dropout is the identity
                features[run] = pooled.float().cpu()
                for head in heads:
                    out[head][run] = model.heads[head](pooled).float().cpu()  # (batch, labels)
        finally:
            model.train(was_training)
        return features, out

    def predict_proba(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(n, num_labels)`` in eval mode without gradients, in length runs."""
        check_request(self.labels, head, batch_size)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()

        def run(batch: list[str]) -> np.ndarray:
            inputs = {k: v.to(device) for k, v in self.tokenize(batch).items()}
            logits = self.model(**inputs, head=head)  # (batch, num_labels)
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

        try:
            with torch.no_grad():
                return predict_in_runs(texts, len(self.labels[head]), self.max_length, batch_size, run)
        finally:
            self.model.train(was_training)

    def predict(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Predicted label indices ``(n,)``."""
        return self.predict_proba(texts, head, batch_size).argmax(axis=-1)

    def save(self, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
        """Save atomically: encoder (safetensors), heads, tokenizer, ``handle.json``, provenance, card."""
        with model_directory(path, overwrite) as tmp:
            self.model.encoder.save_pretrained(tmp)
            self.write_classifier_files(tmp)
            if self.subnetwork is not None:
                write_sidecar(tmp, self.subnetwork)
            write_provenance(tmp, provenance, self.kind)
        self.provenance = provenance
        return Path(path)

    def write_classifier_files(self, directory: Path, **extra: Any) -> None:
        """Write what every classifier directory holds beside its encoder: the heads (safetensors), the
        tokenizer and ``handle.json`` (token budget, truncation, dropout, labels, and ``extra``)."""
        if len(self.model.heads):
            state = {k: v.detach().contiguous().cpu() for k, v in self.model.heads.state_dict().items()}
            save_file(state, str(directory / HEADS_FILE))
        self.tokenizer.save_pretrained(directory)
        settings = {
            "max_length": self.max_length,
            "truncation": self.truncation,
            "dropout": self.model.dropout.p,
            "labels": self.labels,
            **extra,
        }
        atomic_write_json(directory / HANDLE_FILE, settings)

    @classmethod
    def load(cls, path: str | Path) -> EncoderHandle:
        """Load a directory written by :meth:`save` (weights checked against ``fanbu.json`` first)."""
        directory = Path(path)
        provenance = expect_kind(directory, cls.kind)
        settings = read_handle_settings(directory)
        resolved = ResolvedSource(str(directory.resolve()), None, "local", directory.name)
        encoder = load_saved_pretrained(AutoModel.from_pretrained, resolved, use_safetensors=True, dtype="auto")
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolved)
        model = classifier_with_heads(encoder, directory, settings)
        labels: dict[str, list[str]] = settings["labels"]
        handle = cls(
            model, tokenizer, labels, settings["max_length"], provenance, settings.get("truncation", "head")
        )
        handle.subnetwork = read_sidecar(directory)
        return handle


def read_handle_settings(directory: Path) -> dict[str, Any]:
    """``handle.json``: max_length, dropout, labels (head -> label names) and truncation, type-checked."""
    path = directory / HANDLE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing or not valid JSON (no such file); re-save the model")
    settings = read_json(path, "re-save the model")
    if not isinstance(settings, dict) or not {"max_length", "dropout", "labels"} <= set(settings):
        raise ModelError(f"{path}: needs max_length, dropout and labels; re-save the model")
    problem = check_max_length_setting(settings["max_length"])
    dropout, labels = settings["dropout"], settings["labels"]
    if problem is None and (isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1):
        problem = f"dropout {dropout!r} is not a number in [0, 1)"
    if problem is None and not (
        isinstance(labels, dict)
        and all(
            isinstance(names, list) and names and all(isinstance(n, str) for n in names)
            for names in labels.values()
        )
    ):
        problem = f"labels must map each head to its label names (strings), got {labels!r:.120}"
    if problem is None and settings.get("truncation", "head") not in TRUNCATIONS:
        problem = f"truncation {settings['truncation']!r:.60} is not one of {', '.join(TRUNCATIONS)}"
    if problem is not None:
        raise ModelError(f"{path}: {problem}; re-save the model")
    return dict(settings)


def check_max_length_setting(value: Any) -> str | None:
    """What is wrong with a saved ``max_length`` (a positive integer), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"max_length {value!r:.60} is not a positive integer"
    return None


def classifier_with_heads(encoder: nn.Module, directory: Path, settings: dict[str, Any]) -> EncoderClassifier:
    """``encoder`` with the heads that ``handle.json`` lists, loaded strictly from ``heads.safetensors``."""
    labels: dict[str, list[str]] = settings["labels"]
    model = EncoderClassifier(encoder, {n: len(v) for n, v in labels.items()}, settings["dropout"])
    if labels:
        if not (directory / HEADS_FILE).is_file():
            raise ModelError(f"{directory / HEADS_FILE}: missing but {HANDLE_FILE} lists heads; re-save")
        path = directory / HEADS_FILE
        try:
            retyped = dtype_mismatches(path, model.heads.state_dict())
            if retyped:
                raise RuntimeError("; ".join(retyped))
            model.heads.load_state_dict(load_file(str(path)), strict=True)
        except (RuntimeError, OSError, ValueError, SafetensorError) as exc:
            raise ModelError(f"{path}: does not match {HANDLE_FILE} ({exc}); re-save") from None
    return model


def write_sidecar(directory: Path, sidecar: Sidecar) -> None:
    """Write ``subnetwork.safetensors`` and ``subnetwork.json`` into a model directory being saved."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in sidecar.tensors.items()}
    atomic_write_bytes(directory / SUBNETWORK_FILE, save(tensors))
    atomic_write_json(directory / SUBNETWORK_JSON, sidecar.meta)


def read_sidecar(directory: Path) -> Sidecar | None:
    """The sidecar saved in ``directory``, or ``None`` when it has none."""
    path = directory / SUBNETWORK_JSON
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        tensors = load_file(str(directory / SUBNETWORK_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelError(f"{path} or {SUBNETWORK_FILE}: unreadable ({exc}); re-save the model") from None
    return Sidecar(meta, tensors)


def keep_head(handle: EncoderHandle, name: str, label_names: tuple[str, ...]) -> EncoderHandle:
    """Restrict ``handle`` to the head ``name`` (added fresh when missing or when its labels differ)."""
    kept = (
        handle.model.heads[name]
        if name in handle.labels and handle.labels[name] == list(label_names)
        else None
    )
    handle.model.heads = nn.ModuleDict()
    handle.labels = {}
    if kept is None:
        handle.add_head(name, label_names)
    else:
        handle.model.heads[name] = kept
        handle.labels[name] = list(label_names)
    return handle
