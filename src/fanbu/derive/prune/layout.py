"""Which axis of which parameter belongs to which prunable unit, for BERT and Llama layouts.

Every parameter axis is tagged with a *family*: ``"hidden"`` (the residual stream), ``"vocab"``, or a
per-layer family ``(kind, layer)``: ``qk`` / ``vo`` (BERT query-key and value-output channels),
``q`` / ``kv`` (Llama query and key-value channels) and ``ffn``. Importance sums scores along these
axes; surgery indexes them. One table per architecture drives both, so they cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from fanbu.derive.prune.config import PruneError

Family = str | tuple[str, int]
Axes = tuple[Family | None, ...]

LAYER_FAMILIES = ("qk", "vo", "q", "kv", "ffn")
_LAYER_INDEX = re.compile(r"\.(layers?)\.(\d+)\.")

_BERT_LAYER = r"encoder\.encoder\.layer\.\d+\."
_BERT_RULES: list[tuple[str, tuple[str | None, ...]]] = [
    (r"encoder\.embeddings\.word_embeddings\.weight", ("vocab", "hidden")),
    (r"encoder\.embeddings\.(position|token_type)_embeddings\.weight", (None, "hidden")),
    (
        r"encoder\.(embeddings|encoder\.layer\.\d+\.(attention\.output|output))\.LayerNorm\.(weight|bias)",
        ("hidden",),
    ),
    (_BERT_LAYER + r"attention\.self\.(query|key)\.weight", ("qk", "hidden")),
    (_BERT_LAYER + r"attention\.self\.(query|key)\.bias", ("qk",)),
    (_BERT_LAYER + r"attention\.self\.value\.weight", ("vo", "hidden")),
    (_BERT_LAYER + r"attention\.self\.value\.bias", ("vo",)),
    (_BERT_LAYER + r"attention\.output\.dense\.weight", ("hidden", "vo")),
    (_BERT_LAYER + r"attention\.output\.dense\.bias", ("hidden",)),
    (_BERT_LAYER + r"intermediate\.dense\.weight", ("ffn", "hidden")),
    (_BERT_LAYER + r"intermediate\.dense\.bias", ("ffn",)),
    (_BERT_LAYER + r"output\.dense\.weight", ("hidden", "ffn")),
    (_BERT_LAYER + r"output\.dense\.bias", ("hidden",)),
    (r"encoder\.pooler\.dense\.weight", ("hidden", "hidden")),
    (r"encoder\.pooler\.dense\.bias", ("hidden",)),
    (r"heads\.[^.]+\.weight", (None, "hidden")),
    (r"heads\.[^.]+\.bias", (None,)),
]

_LLAMA_LAYER = r"model\.layers\.\d+\."
_LLAMA_RULES: list[tuple[str, tuple[str | None, ...]]] = [
    (r"(model\.embed_tokens|lm_head)\.weight", ("vocab", "hidden")),
    (r"model\.norm\.weight", ("hidden",)),
    (_LLAMA_LAYER + r"(input_layernorm|post_attention_layernorm)\.weight", ("hidden",)),
    (_LLAMA_LAYER + r"self_attn\.q_proj\.weight", ("q", "hidden")),
    (_LLAMA_LAYER + r"self_attn\.q_proj\.bias", ("q",)),
    (_LLAMA_LAYER + r"self_attn\.(k|v)_proj\.weight", ("kv", "hidden")),
    (_LLAMA_LAYER + r"self_attn\.(k|v)_proj\.bias", ("kv",)),
    (_LLAMA_LAYER + r"self_attn\.o_proj\.weight", ("hidden", "q")),
    (_LLAMA_LAYER + r"self_attn\.o_proj\.bias", ("hidden",)),
    (_LLAMA_LAYER + r"self_attn\.(q_norm|k_norm)\.weight", (None,)),
    (_LLAMA_LAYER + r"mlp\.(gate|up)_proj\.weight", ("ffn", "hidden")),
    (_LLAMA_LAYER + r"mlp\.(gate|up)_proj\.bias", ("ffn",)),
    (_LLAMA_LAYER + r"mlp\.down_proj\.weight", ("hidden", "ffn")),
    (_LLAMA_LAYER + r"mlp\.down_proj\.bias", ("hidden",)),
]

_RULES = {
    "encoder": [(re.compile(p), axes) for p, axes in _BERT_RULES],
    "llama": [(re.compile(p), axes) for p, axes in _LLAMA_RULES],
}
_LAYERS_PATH = {"encoder": "encoder.encoder.layer", "llama": "model.layers"}
_NAMES = {"encoder": "a BERT-family encoder", "llama": "a Llama-family causal LM"}


@dataclass(frozen=True)
class Layout:
    """The prunable sizes of a model and the axis table of its parameters.

    ``heads`` counts query heads and ``groups`` key-value heads (equal for BERT).
    """

    kind: Literal["encoder", "llama"]
    num_layers: int
    hidden: int
    heads: int
    groups: int
    head_dim: int
    ffn: int
    vocab: int

    @property
    def group_size(self) -> int:
        """Query heads per key-value head (1 for BERT)."""
        return self.heads // self.groups

    @property
    def units(self) -> int:
        """Attention units that are kept or dropped whole: heads (BERT) or KV groups (Llama)."""
        return self.groups

    def layer_of(self, name: str) -> int | None:
        """The layer index in a parameter name, or ``None`` for parameters outside the layer stack."""
        match = _LAYER_INDEX.search(name)
        return int(match.group(2)) if match else None

    def axes(self, name: str) -> Axes:
        """The family of each axis of parameter ``name``.

        Raises:
            PruneError: the parameter is not part of this layout (an unsupported architecture).
        """
        for pattern, axes in _RULES[self.kind]:
            if pattern.fullmatch(name):
                layer = self.layer_of(name)
                return tuple((a, layer) if a in LAYER_FAMILIES and layer is not None else a for a in axes)
        raise PruneError(
            f"parameter {name!r} is not part of {_NAMES[self.kind]} layout, so this model cannot be pruned "
            "structurally; prune a BERT-style encoder (absolute positions) or a Llama-style decoder"
        )

    def layer_modules(self, model: nn.Module) -> nn.ModuleList:
        """The stack of layers inside ``model`` (the handle's ``model``)."""
        modules = model.get_submodule(_LAYERS_PATH[self.kind])
        assert isinstance(modules, nn.ModuleList)
        return modules


def rename_layer(name: str, new_index: int) -> str:
    """``name`` with its layer index replaced by ``new_index`` (layers are renumbered after dropping)."""
    return _LAYER_INDEX.sub(lambda m: f".{m.group(1)}.{new_index}.", name, count=1)


def encoder_layout(model: nn.Module) -> Layout:
    """The layout of an :class:`~fanbu.models.encoder.EncoderClassifier` over a BERT-family encoder."""
    config = model.encoder.config
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise PruneError(
            f"position_embedding_type={config.position_embedding_type!r}: only absolute position embeddings "
            "are supported; prune a BERT-style encoder with absolute positions"
        )
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise PruneError("the encoder is configured as a decoder (cross-attention); prune a plain encoder")
    heads = int(config.num_attention_heads)
    return Layout(
        kind="encoder",
        num_layers=int(config.num_hidden_layers),
        hidden=int(config.hidden_size),
        heads=heads,
        groups=heads,
        head_dim=int(config.hidden_size) // heads,
        ffn=int(config.intermediate_size),
        vocab=int(config.vocab_size),
    )


def llama_layout(model: nn.Module) -> Layout:
    """The layout of a Llama-family ``*ForCausalLM`` (GQA aware)."""
    config = model.config
    heads = int(config.num_attention_heads)
    groups = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    if getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None):
        raise PruneError(
            "mixture-of-experts models are not supported by structured pruning; use a dense model"
        )
    return Layout(
        kind="llama",
        num_layers=int(config.num_hidden_layers),
        hidden=int(config.hidden_size),
        heads=heads,
        groups=groups,
        head_dim=int(head_dim),
        ffn=int(config.intermediate_size),
        vocab=int(config.vocab_size),
    )
