"""Model handles (encoder + heads, causal LM, any ``nn.Module``), their sources, and saved artefacts.

Every handle saves into a directory with safetensors weights, ``fanbu.json`` provenance and a model
card, and loads back with :func:`load_handle`.
"""

from fanbu.models.adapter import ModuleHandle
from fanbu.models.artefact import Provenance, load_handle, read_provenance, verify_weights, write_provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderClassifier, EncoderHandle
from fanbu.models.sources import PACKAGED_MODELS, PackagedModel, ResolvedSource, resolve_source
from fanbu.models.tiny import tiny_tokenizer

Handle = EncoderHandle | CausalLMHandle | ModuleHandle

__all__ = [
    "PACKAGED_MODELS",
    "CausalLMHandle",
    "EncoderClassifier",
    "EncoderHandle",
    "Handle",
    "ModuleHandle",
    "PackagedModel",
    "Provenance",
    "ResolvedSource",
    "load_handle",
    "read_provenance",
    "resolve_source",
    "tiny_tokenizer",
    "verify_weights",
    "write_provenance",
]
