"""Model handles (encoder + heads, MoE encoder, causal LM, any ``nn.Module``), their runtimes, and saved artefacts.

Every handle saves into a directory with safetensors weights, ``fanbu.json`` provenance and a model
card, and loads back with :func:`load_handle` (which also loads a deployment on its ONNX runtimes).
Every classifier runtime answers through one :class:`Predictor` protocol.
"""

from fanbu.models.artefact import Provenance, read_provenance, verify_weights, write_provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderClassifier, EncoderHandle
from fanbu.models.loading import CLASSIFIER_KINDS, HANDLES, Handle, handle_kind, load_deployment, load_handle
from fanbu.models.module import ModuleHandle, module_factory
from fanbu.models.moe import MoEHandle
from fanbu.models.predict import Predictor
from fanbu.models.sources import PACKAGED_MODELS, PackagedModel, ResolvedSource, resolve_source
from fanbu.models.tiny import tiny_tokenizer

__all__ = [
    "CLASSIFIER_KINDS",
    "HANDLES",
    "PACKAGED_MODELS",
    "CausalLMHandle",
    "EncoderClassifier",
    "EncoderHandle",
    "Handle",
    "MoEHandle",
    "ModuleHandle",
    "PackagedModel",
    "Predictor",
    "Provenance",
    "ResolvedSource",
    "handle_kind",
    "load_deployment",
    "load_handle",
    "module_factory",
    "read_provenance",
    "resolve_source",
    "tiny_tokenizer",
    "verify_weights",
    "write_provenance",
]
