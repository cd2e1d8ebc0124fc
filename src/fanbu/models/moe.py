"""Saving and reloading a mixture-of-experts encoder: safetensors weights plus a JSON description.

A saved MoE directory holds the encoder's ``config.json`` (the dense BERT it was upcycled from),
``moe.json`` (experts, top-k), ``moe_encoder.safetensors`` (every encoder weight, routers and experts
included), the heads, tokenizer, ``handle.json`` and provenance like any encoder. :meth:`MoEHandle.load`
rebuilds the dense BERT from ``config.json`` without weights, converts its FFNs into mixtures of the
recorded shape and loads the weights strictly. The weights file is deliberately not ``model.safetensors``,
so plain ``AutoModel.from_pretrained`` fails loudly instead of silently dropping
the experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from fanbu.errors import ModelError
from fanbu.io import atomic_write_json
from fanbu.models.artefact import (
    Provenance,
    dtype_mismatches,
    expect_kind,
    model_directory,
    read_json,
    write_provenance,
)
from fanbu.models.encoder import (
    EncoderClassifier,
    EncoderHandle,
    classifier_with_heads,
    read_handle_settings,
)
from fanbu.models.moe_layers import ffn_layers, mixtures, to_moe

MOE_FILE = "moe.json"
MOE_WEIGHTS = "moe_encoder.safetensors"
MOE_FORMAT = 1


class MoEHandle(EncoderHandle):
    """An encoder handle whose FFNs are mixtures of experts; predicts like any :class:`EncoderHandle`."""

    kind = "moe"

    def __init__(self, *args: Any, experts: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.experts = list(experts)
        blocks = list(mixtures(self.model.encoder))
        if not blocks:
            raise ModelError("MoEHandle needs an encoder whose FFNs are mixtures (see fanbu.feedback.strategies.moe)")
        if len(blocks[0].experts) != len(self.experts):
            raise ModelError(f"{len(blocks[0].experts)} experts per layer but {len(self.experts)} names")

    @property
    def top_k(self) -> int:
        """Experts used per token."""
        return next(mixtures(self.model.encoder)).top_k

    def densify(self) -> EncoderHandle:
        """A dense :class:`EncoderHandle`: each layer's FFN is the mean of its experts, the rest copied.

        Deriving a small model from an MoE champion starts from this dense copy (pruning and ONNX export
        work on dense BERT layers); the MoE itself stays the distillation teacher. The experts were
        branched from one dense model, so their mean is a merge of siblings, not of strangers.
        """
        source = self.model.encoder
        dense = AutoModel.from_config(source.config, dtype=torch.float32)
        state = {k: v for k, v in source.state_dict().items() if ".intermediate." not in k}
        for i, layer in enumerate(ffn_layers(source)):
            experts = layer.intermediate.experts
            prefix = f"encoder.layer.{i}."
            state[prefix + "intermediate.dense.weight"] = torch.stack([e.up.weight for e in experts]).mean(0)
            state[prefix + "intermediate.dense.bias"] = torch.stack([e.up.bias for e in experts]).mean(0)
            state[prefix + "output.dense.weight"] = torch.stack([e.down.weight for e in experts]).mean(0)
            state[prefix + "output.dense.bias"] = torch.stack([e.down.bias for e in experts]).mean(0)
        dense.load_state_dict(state, strict=True)
        dense.to(next(source.parameters()).device)
        labels = {n: list(v) for n, v in self.labels.items()}
        model = EncoderClassifier(dense, {n: len(v) for n, v in labels.items()}, self.model.dropout.p)
        model.heads.load_state_dict(self.model.heads.state_dict(), strict=True)
        return EncoderHandle(model, self.tokenizer, labels, self.max_length, self.provenance, self.truncation)

    def save(self, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
        """Save atomically: config, MoE description and weights, heads, tokenizer, settings, provenance."""
        with model_directory(path, overwrite) as tmp:
            self.model.encoder.config.save_pretrained(tmp)
            state = {k: v.detach().contiguous().cpu() for k, v in self.model.encoder.state_dict().items()}
            save_file(state, str(tmp / MOE_WEIGHTS))
            self.write_classifier_files(tmp, moe=MOE_FILE)
            atomic_write_json(
                tmp / MOE_FILE, {"format": MOE_FORMAT, "experts": self.experts, "top_k": self.top_k}
            )
            write_provenance(tmp, provenance, self.kind)
        self.provenance = provenance
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> MoEHandle:
        """Load a directory written by :meth:`save` (weights checked against ``fanbu.json`` first)."""
        directory = Path(path)
        provenance = expect_kind(directory, cls.kind, legacy=("encoder",))  # before MoE had its own kind
        spec = _read_spec(directory)
        settings = read_handle_settings(directory)
        try:
            config = AutoConfig.from_pretrained(str(directory))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{directory / 'config.json'}: missing or invalid ({exc}); re-save the model") from None
        encoder = AutoModel.from_config(config, dtype=torch.float32)
        to_moe(encoder, [{} for _ in spec["experts"]], int(spec["top_k"]))
        try:
            retyped = dtype_mismatches(directory / MOE_WEIGHTS, encoder.state_dict())
            if retyped:
                raise RuntimeError("; ".join(retyped))
            encoder.load_state_dict(load_file(str(directory / MOE_WEIGHTS)), strict=True)
        except (RuntimeError, OSError, ValueError, SafetensorError) as exc:
            raise ModelError(
                f"{directory / MOE_WEIGHTS}: does not match {MOE_FILE} ({exc}); re-save"
            ) from None
        model = classifier_with_heads(encoder, directory, settings)
        labels: dict[str, list[str]] = settings["labels"]
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(
            model,
            tokenizer,
            labels,
            settings["max_length"],
            provenance,
            settings.get("truncation", "head"),
            experts=spec["experts"],
        )


def _read_spec(directory: Path) -> dict[str, Any]:
    path = directory / MOE_FILE
    if not path.is_file():
        raise ModelError(
            f"{path}: missing; this is not a saved MoE (load it with fanbu.models.load_handle)"
        )
    spec = read_json(path, "re-save the model")
    if not isinstance(spec, dict) or spec.get("format") != MOE_FORMAT or not {"experts", "top_k"} <= set(spec):
        raise ModelError(f"{path}: needs format {MOE_FORMAT}, experts and top_k; re-save the model")
    experts, top_k = spec["experts"], spec["top_k"]
    if not isinstance(experts, list) or not experts or isinstance(top_k, bool) or not isinstance(top_k, int) or not (
        1 <= top_k <= len(experts)
    ):
        raise ModelError(f"{path}: experts must be a non-empty list and top_k an integer 1..len(experts); re-save")
    return dict(spec)
