"""Causal language model handles (Llama family), loadable from safetensors directories or GGUF files.

A GGUF file (the packaged SmolLM2, or a local ``.gguf`` path) is dequantised to float32 on load, so
the handle trains and saves like any other; saving always writes safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import ModelError
from fanbu.io import atomic_write_json
from fanbu.models.artefact import Provenance, expect_kind, model_directory, read_json, write_provenance
from fanbu.models.encoder import HANDLE_FILE, check_max_length_setting, tokenize_texts
from fanbu.models.sources import (
    ResolvedSource,
    check_local_weights,
    check_max_length,
    load_pretrained,
    load_saved_pretrained,
    resolve_source,
)
from fanbu.models.tiny import tiny_tokenizer


def _with_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> PreTrainedTokenizerBase:
    """Use the eos token for padding when the tokenizer has no pad token (usual for causal LMs)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                "the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


class CausalLMHandle:
    """An ``AutoModelForCausalLM`` with its tokenizer (which always has a pad token)."""

    kind = "causal_lm"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        provenance: Provenance | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = _with_pad_token(tokenizer, model)
        self.max_length = max_length
        self.provenance = provenance

    @classmethod
    def from_source(cls, source: str, max_length: int = 256) -> CausalLMHandle:
        """Load from ``package:NAME``, a local directory or ``.gguf`` file, or a hub id, in float32."""
        resolved = resolve_source(source)
        check_local_weights(resolved)
        if resolved.gguf_file is None:
            model = load_pretrained(
                AutoModelForCausalLM.from_pretrained, resolved, use_safetensors=True, dtype=torch.float32
            )
        else:
            dense = GgufConfig(dequantize=True)  # plain trainable, saveable Linear layers, not packed blocks
            model = load_pretrained(
                AutoModelForCausalLM.from_pretrained, resolved, dtype=torch.float32, quantization_config=dense
            )
        check_max_length(max_length, model.config, source)
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolved)
        return cls(model, tokenizer, max_length)

    @classmethod
    def tiny(
        cls,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 4,
        num_kv_heads: int = 2,
        intermediate_size: int = 64,
        max_length: int = 64,
        seed: int = 0,
    ) -> CausalLMHandle:
        """A random Llama with the in-memory tiny tokenizer, for tests and dry runs."""
        tokenizer = tiny_tokenizer(model_max_length=max_length)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        return cls(model, tokenizer, max_length)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Padded, truncated ``input_ids`` and ``attention_mask``, each ``(batch, seq)``."""
        return tokenize_texts(self.tokenizer, texts, self.max_length)

    def save(self, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
        """Save atomically: model (safetensors), tokenizer, ``handle.json``, provenance and model card."""
        with model_directory(path, overwrite) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / HANDLE_FILE, {"max_length": self.max_length})
            write_provenance(tmp, provenance, self.kind)
        self.provenance = provenance
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> CausalLMHandle:
        """Load a directory written by :meth:`save` (weights checked against ``fanbu.json`` first)."""
        directory = Path(path)
        provenance = expect_kind(directory, cls.kind)
        settings_path = directory / HANDLE_FILE
        if not settings_path.is_file():
            raise ModelError(f"{settings_path}: missing or without max_length; re-save the model")
        settings = read_json(settings_path, "re-save the model")
        if not isinstance(settings, dict) or "max_length" not in settings:
            raise ModelError(f"{settings_path}: missing or without max_length; re-save the model")
        problem = check_max_length_setting(settings["max_length"])
        if problem is not None:
            raise ModelError(f"{settings_path}: {problem}; re-save the model")
        max_length = settings["max_length"]
        resolved = ResolvedSource(str(directory.resolve()), None, "local", directory.name)
        model = load_saved_pretrained(
            AutoModelForCausalLM.from_pretrained, resolved, use_safetensors=True, dtype="auto"
        )
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolved)
        return cls(model, tokenizer, max_length, provenance)
