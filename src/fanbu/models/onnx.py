"""The ONNX runtime of a deployment: an onnxruntime session, the tokenizer and the label names of each head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from transformers import AutoTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import ModelError
from fanbu.models.deployment import read_manifest, verified_file
from fanbu.models.encoder import EncoderHandle
from fanbu.models.predict import check_request, predict_in_runs, softmax
from fanbu.models.tokenize import Truncation, encode_texts

INPUTS = ("input_ids", "attention_mask")
OUTPUT_PREFIX = "logits_"
_ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)


def open_session(path: str | Path, intra_op_threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session on ``path``, with a clear error for a missing or damaged file."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"{file}: ONNX file not found; export it with export_onnx or save_deployment")
    if intra_op_threads is not None and intra_op_threads < 1:
        raise ModelError(
            f"intra_op_threads must be at least 1 (or None for all cores), got {intra_op_threads}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    try:
        return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as exc:
        raise ModelError(
            f"{file}: onnxruntime cannot load it ({type(exc).__name__}: {str(exc)[:300]}); the file is "
            "damaged or not ONNX: export it again with export_onnx"
        ) from None


def session_heads(session: ort.InferenceSession, path: str | Path) -> list[str]:
    """The head names of a session's ``logits_<head>`` outputs, after checking its inputs."""
    inputs = [i.name for i in session.get_inputs()]
    if sorted(inputs) != sorted(INPUTS):
        raise ModelError(f"{path}: inputs {inputs}, expected {list(INPUTS)}; export it with export_onnx")
    return [o.name[len(OUTPUT_PREFIX) :] for o in session.get_outputs() if o.name.startswith(OUTPUT_PREFIX)]


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
        """Class probabilities ``(n, num_labels)``, run in batches of similar length."""
        check_request(self.labels, head, batch_size)

        def run(batch: list[str]) -> np.ndarray:
            ids, mask = encode_texts(self.tokenizer, batch, self.max_length, self.truncation)  # (batch, seq)
            (logits,) = self.session.run([OUTPUT_PREFIX + head], {"input_ids": ids, "attention_mask": mask})
            return softmax(logits)  # (batch, num_labels)

        return predict_in_runs(texts, len(self.labels[head]), self.max_length, batch_size, run)

    def predict(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Predicted label indices ``(n,)``."""
        return self.predict_proba(texts, head, batch_size).argmax(axis=-1)

