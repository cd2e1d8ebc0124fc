"""The one way to load a saved model directory: :func:`load_handle`.

A directory's ``fanbu.json`` names its kind; the kind names the handle class that loads it. A derive
``quantize`` deployment (``deployment.json`` beside the weights) also loads on another runtime:
``runtime="onnx_int8"`` (the deployable graph), ``"onnx"``, ``"torch_int8"``; ``"torch"`` or ``None``
is the saved handle itself. A new model kind is added here, once, and then loads everywhere.
"""

from __future__ import annotations

from pathlib import Path

from fanbu.errors import ModelError
from fanbu.models.artefact import read_provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.deployment import (
    DEPLOYMENT_JSON,
    ONNX_FILE,
    ONNX_INT8_FILE,
    check_runtime,
    read_manifest,
)
from fanbu.models.encoder import EncoderHandle
from fanbu.models.int8 import quantize_int8
from fanbu.models.lora import ADAPTER_CONFIG, load_adapter
from fanbu.models.lora import KIND as LORA
from fanbu.models.module import ModuleHandle
from fanbu.models.moe import MOE_FILE, MoEHandle
from fanbu.models.onnx import OnnxClassifier
from fanbu.models.predict import Predictor

Handle = EncoderHandle | MoEHandle | CausalLMHandle | ModuleHandle
HANDLES: dict[str, type[EncoderHandle | CausalLMHandle | ModuleHandle]] = {
    "encoder": EncoderHandle,
    "moe": MoEHandle,
    "causal_lm": CausalLMHandle,
    "module": ModuleHandle,
}
CLASSIFIER_KINDS = ("encoder", "moe")  # kinds whose handles classify texts with named heads


def handle_kind(path: str | Path) -> str:
    """The kind of the saved model at ``path`` (an MoE or an adapter saved before it had its own kind
    counts as one)."""
    _, kind = read_provenance(Path(path))
    if kind == "encoder" and (Path(path) / MOE_FILE).is_file():
        return "moe"
    if kind == "encoder" and (Path(path) / ADAPTER_CONFIG).is_file():
        return LORA
    return kind


def load_handle(
    path: str | Path,
    runtime: str | None = None,
    intra_op_threads: int | None = None,
    base: EncoderHandle | None = None,
) -> Handle | Predictor:
    """Load the saved model at ``path`` with the handle its kind names, or one runtime of a deployment.

    Args:
        path: A directory written by a handle's ``save`` (or by ``save_deployment``).
        runtime: ``None`` or ``"torch"``: the saved handle. ``"onnx_int8"``, ``"onnx"``,
            ``"torch_int8"``: that runtime of a deployment (the directory must hold ``deployment.json``).
        intra_op_threads: onnxruntime's intra-op threads for an ONNX runtime (``None``: every core).
        base: The encoder a ``lora`` adapter goes onto (the workspace loads it from the adapter's
            ``base_model``); ignored for other kinds.

    Raises:
        ModelError: not a fanbu model directory, a damaged file, or a runtime the directory lacks.
    """
    directory = Path(path)
    kind = handle_kind(directory)
    if kind == LORA:
        if base is None:
            raise ModelError(
                f"{directory} is a LoRA adapter: load it with Workspace.load (which loads its base model "
                "from the registry), or pass base= the encoder it adapts"
            )
        return load_adapter(base, directory)
    if runtime in (None, "torch"):
        return HANDLES[kind].load(directory)
    if not (directory / DEPLOYMENT_JSON).is_file():
        raise ModelError(
            f"{directory}: runtime {runtime!r} needs a deployment ({DEPLOYMENT_JSON}); this is a plain saved "
            "model: load it with runtime=None, or derive it with a quantize stage"
        )
    return load_deployment(directory, runtime, intra_op_threads)


def load_predictor(
    path: str | Path, runtime: str = "onnx_int8", intra_op_threads: int | None = None
) -> Predictor:
    """What serving runs: a deployment on ``runtime``, or else the saved classifier handle itself.

    Raises:
        ModelError: the directory is damaged, lacks the runtime, or holds no classifier with heads.
    """
    directory = Path(path)
    if (directory / DEPLOYMENT_JSON).is_file():
        return load_deployment(directory, runtime, intra_op_threads)
    kind = handle_kind(directory)
    if kind == LORA:
        raise ModelError(
            f"{directory} is a LoRA adapter; serve the model it was merged into, or load it with Workspace.load"
        )
    if kind not in CLASSIFIER_KINDS:
        raise ModelError(
            f"{directory} holds a {kind!r} model; only {' or '.join(CLASSIFIER_KINDS)} classifiers (or their "
            "quantize deployments) answer predict_proba"
        )
    return HANDLES[kind].load(directory)


def load_deployment(
    directory: str | Path, runtime: str = "onnx_int8", intra_op_threads: int | None = None
) -> Predictor:
    """A predictor (``predict`` / ``predict_proba``) on one runtime of a deployment.

    Args:
        directory: A directory written by ``save_deployment``.
        runtime: ``onnx_int8`` (the deployable one), ``onnx``, ``torch_int8`` or ``torch``.
        intra_op_threads: onnxruntime's intra-op threads (torch uses ``torch.set_num_threads``, which is
            process-wide, so it is left to the caller).

    Raises:
        ModelError: not a deployment, the runtime is unknown or was not written, or a file is corrupt.
    """
    manifest = read_manifest(directory)
    check_runtime(directory, manifest, runtime)
    if runtime == "onnx_int8":
        return OnnxClassifier.load(directory, ONNX_INT8_FILE, intra_op_threads)
    if runtime == "onnx":
        return OnnxClassifier.load(directory, ONNX_FILE, intra_op_threads)
    handle = EncoderHandle.load(directory)  # checks the safetensors against fanbu.json
    # torch_int8 is rebuilt from the fp32 weights: packed int8 torch params are not safetensors-serialisable.
    return quantize_int8(handle) if runtime == "torch_int8" else handle
