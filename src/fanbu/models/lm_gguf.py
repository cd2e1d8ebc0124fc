"""GGUF export of a Llama-family causal LM with the ``gguf`` writer, checked by reading it back.

The file follows llama.cpp's layout (``token_embd``, ``blk.N.attn_q``, ...; query and key rows permuted
to llama.cpp's rotary order, as its ``convert_hf_to_gguf.py`` does) with a GPT-2 style BPE vocabulary
taken from the Hugging Face tokenizer. Tensors are written as F32, F16 or Q8_0. There is no llama.cpp
runtime here (llama-cpp-python has no wheel in this index), so parity is checked by loading the file
back through transformers' GGUF reader (which dequantises) and comparing perplexity with the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from torch import Tensor

from fanbu.errors import ModelError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.lm_export import Parity, lm_parity, torch_greedy, torch_scorer

_QUANT = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF rotary halves -> llama.cpp interleaved pairs, per head (``(heads * head_dim, in)``)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _gguf_name(name: str) -> str | None:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")  # model.layers.N.<module...>.weight
    module = ".".join(parts[3:-1])
    return f"blk.{parts[2]}.{_NAMES[module]}.weight" if module in _NAMES else None


def _vocabulary(handle: CausalLMHandle, writer: gguf.GGUFWriter, vocab: int) -> None:
    tokenizer = handle.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "BPE":
        raise ModelError("GGUF export writes a BPE (GPT-2 style) vocabulary; this tokenizer is not BPE")
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab)))
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)])
    writer.add_token_types([3 if i in special else 1 for i in range(vocab)])  # 3: control, 1: normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for setter, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            setter(int(token_id))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def export_gguf(handle: CausalLMHandle, path: str | Path, dtype: str = "f16") -> Path:
    """Write ``handle`` as a GGUF file (``dtype``: f32, f16 or q8_0 for the matrices; norms stay f32).

    Raises:
        ModelError: not a Llama-family model, head width unlike hidden / heads, a non-BPE tokenizer.
    """
    config = handle.model.config
    if config.model_type != "llama" or dtype not in _QUANT:
        raise ModelError(
            f"GGUF export supports Llama models and dtype f32/f16/q8_0 (got {config.model_type}, {dtype})"
        )
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if head_dim * heads != config.hidden_size:
        raise ModelError(
            f"GGUF llama needs hidden = heads x head_dim ({config.hidden_size} != {heads} x {head_dim})"
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(
        float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"])
    )
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(int({"f32": 0, "f16": 1, "q8_0": 7}[dtype]))
    _vocabulary(handle, writer, config.vocab_size)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in handle.model.state_dict().items():
        out = _gguf_name(name)
        if out is None or (tied and name == "lm_head.weight"):
            continue
        data = _array(tensor)
        if name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        kind = _QUANT[dtype] if data.ndim == 2 else gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(out, data.astype(np.float16), raw_dtype=kind)
        elif kind == gguf.GGMLQuantizationType.Q8_0:
            writer.add_tensor(out, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(out, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _array(tensor: Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def gguf_parity(
    handle: CausalLMHandle, path: str | Path, texts: list[str], prompts: list[str], tolerance: float = 0.05
) -> Parity:
    """Read ``path`` back through transformers' GGUF reader and compare it with ``handle`` (:func:`lm_parity`)."""
    loaded = CausalLMHandle.from_source(str(path), max_length=handle.max_length)
    loaded.tokenizer = handle.tokenizer
    return lm_parity(handle, torch_scorer(loaded), torch_greedy(loaded), texts, prompts, tolerance)
