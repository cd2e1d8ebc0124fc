"""The deployable predictor: an onnxruntime session, the tokenizer and the label names of each head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.derive.quantize.graph import OUTPUT_PREFIX, open_session, session_heads
from fanbu.derive.quantize.manifest import read_manifest, verified_file
from fanbu.errors import ModelError
from fanbu.models.encoder import EncoderHandle
from fanbu.models.tokenize import Truncation, encode_texts, length_order


class Predictor(Protocol):
    """What every runtime of a deployment offers (an :class:`EncoderHandle` is one)."""

    labels: dict[str, list[str]]

    def predict_proba(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray: ...

    def predict(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray: ...


class OnnxClassifier:
    """Classify texts with an exported graph: the same ``predict`` / ``predict_proba`` as a handle."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: PreTrainedTokenizerBase,
        labels: Mapping[str, Sequence[str]],
        max_length: int,
        truncation: Truncation = "head",
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.labels = {name: list(names) for name, names in labels.items()}
        self.max_length = max_length
        self.truncation: Truncation = truncation
        graph_heads = set(session_heads(session, "the ONNX graph"))
        missing = sorted(set(self.labels) - graph_heads)
        if missing:
            raise ModelError(
                f"the ONNX graph has no output for heads {missing}; export them with export_onnx"
            )

    @classmethod
    def load(
        cls, directory: str | Path, onnx_file: str | None = None, intra_op_threads: int | None = None
    ) -> OnnxClassifier:
        """Load a deployment written by ``save_deployment``.

        Args:
            directory: The deployment directory.
            onnx_file: Which graph (``model.onnx`` or ``model.int8.onnx``); default: the deployable one.
            intra_op_threads: onnxruntime's intra-op threads; ``None`` uses every core.
        """
        manifest = read_manifest(directory)
        name = onnx_file or manifest["deployable"]
        if name is None:
            raise ModelError(
                f"{directory}: saved without ONNX (onnx: false); load it with "
                "load_deployment(directory, 'torch') or save it again with onnx: true"
            )
        path = verified_file(directory, manifest, name)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(
            open_session(path, intra_op_threads), tokenizer, manifest["labels"], manifest["max_length"],
            manifest.get("truncation", "head"),
        )

    @classmethod
    def from_handle(
        cls, handle: EncoderHandle, path: str | Path, intra_op_threads: int | None = None
    ) -> OnnxClassifier:
        """A predictor on an exported graph, with ``handle``'s tokenizer and the labels of its heads."""
        session = open_session(path, intra_op_threads)
        heads = session_heads(session, path)
        unknown = [h for h in heads if h not in handle.labels]
        if unknown:
            raise ModelError(
                f"{path}: graph has heads {unknown} that the handle lacks; export from this handle"
            )
        return cls(session, handle.tokenizer, {h: handle.labels[h] for h in heads}, handle.max_length,
                   handle.truncation)

    def predict_proba(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(n, num_labels)``."""
        if head not in self.labels:
            raise ModelError(f"unknown head {head!r}; heads: {', '.join(self.labels) or 'none'}")
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        if len(texts) == 0:
            return np.zeros((0, len(self.labels[head])), dtype=np.float32)
        order = length_order(texts)  # longest first: batches of similar length pad little
        ordered = [texts[i] for i in order]
        chunks = []
        for start in range(0, len(ordered), batch_size):
            ids, mask = encode_texts(self.tokenizer, ordered[start : start + batch_size], self.max_length,
                                     self.truncation)  # each (batch, seq)
            (logits,) = self.session.run([OUTPUT_PREFIX + head], {"input_ids": ids, "attention_mask": mask})
            chunks.append(_softmax(logits))  # (batch, num_labels)
        probs = np.empty((len(texts), len(self.labels[head])), dtype=np.float32)
        probs[order] = np.concatenate(chunks)
        return probs

    def predict(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Predicted label indices ``(n,)``."""
        return self.predict_proba(texts, head, batch_size).argmax(axis=-1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (batch, num_labels)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
