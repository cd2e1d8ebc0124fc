"""PyTorch dynamic int8 quantisation of an encoder handle's linear layers, for CPU inference."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.ao.quantization import quantize_dynamic

from fanbu.models.encoder import EncoderHandle


def quantize_int8(handle: EncoderHandle) -> EncoderHandle:
    """A new handle whose encoder and head ``nn.Linear`` layers are dynamically quantised to qint8.

    Weights are stored in int8 and activations are quantised on the fly, per batch; embeddings and
    layer norms stay fp32. The copy lives on the CPU (the quantised kernels are CPU-only) and the input
    handle is left untouched. Its packed weights are not safetensors-serialisable: save the fp32 handle
    and quantise again after loading.
    """
    model = copy.deepcopy(handle.model).to(device="cpu", dtype=torch.float32).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which fanbu does not depend on; the
        # eager dynamic path still works and is what onnxruntime-free CPU deployment needs.
        warnings.filterwarnings(
            "ignore", message=r".*torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return EncoderHandle(quantized, handle.tokenizer, handle.labels, handle.max_length, handle.provenance,
                         handle.truncation)


def is_int8(module: nn.Module) -> bool:
    """Whether ``module`` holds dynamically quantised linear layers (made by :func:`quantize_int8`)."""
    return any(isinstance(m, DynamicQuantizedLinear) for m in module.modules())
