"""Settings of the quantisation stage: which runtimes to build and how strictly ONNX must match PyTorch."""

from __future__ import annotations

from typing import Literal

from onnx.defs import onnx_opset_version
from pydantic import Field, model_validator

from fanbu.config import Strict

MIN_OPSET = 14  # scaled_dot_product_attention needs opset 14
MAX_OPSET = onnx_opset_version()  # the newest opset the installed onnx knows


class QuantizeConfig(Strict):
    """What :func:`~fanbu.derive.quantize.save_deployment` writes and checks."""

    int8: bool = Field(
        True,
        description="PyTorch dynamic int8 quantisation of every nn.Linear, for CPU (runtime torch_int8).",
    )
    onnx: bool = Field(True, description="Export to ONNX and check it against PyTorch with onnxruntime.")
    onnx_int8: bool = Field(
        True,
        description="onnxruntime dynamic int8 quantisation of the exported graph: the deployable artefact.",
    )
    exporter: Literal["fused", "dynamo"] = Field(
        "fused",
        description="fused: TorchScript export + onnxruntime's BERT fusion (one Attention kernel per layer; "
        "faster on CPU); dynamo: torch.onnx.export(dynamo=True), unfused.",
    )
    opset: int = Field(17, ge=MIN_OPSET, le=MAX_OPSET, description="ONNX opset of the exported graph.")
    atol: float = Field(
        1e-4, ge=0.0, description="Largest |logit difference| allowed between fp32 ONNX and PyTorch."
    )
    check_texts: int = Field(16, ge=1, description="Texts used for the parity and agreement checks.")

    @model_validator(mode="after")
    def _onnx_int8_needs_onnx(self) -> QuantizeConfig:
        if self.onnx_int8 and not self.onnx:
            raise ValueError(
                "onnx_int8 quantises the exported ONNX graph; set onnx: true or onnx_int8: false"
            )
        return self
