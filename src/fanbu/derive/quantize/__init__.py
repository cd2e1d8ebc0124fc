"""Quantisation for deployment: torch int8, ONNX export checked with onnxruntime, int8 ONNX, one directory.

``save_deployment`` writes the fp32 handle with its ONNX graphs and checks; ``fanbu.models.load_handle``
(or ``load_deployment``) loads any of the four runtimes (``onnx_int8`` is the deployable one).
"""

from fanbu.derive.quantize.config import QuantizeConfig
from fanbu.derive.quantize.deploy import DeploymentReport, argmax_agreement, save_deployment
from fanbu.derive.quantize.graph import (
    OnnxParityError,
    check_onnx,
    export_onnx,
    onnx_max_diffs,
    open_session,
    quantize_onnx_int8,
)
from fanbu.models.deployment import DEPLOYMENT_JSON, RUNTIMES
from fanbu.models.int8 import is_int8, quantize_int8

__all__ = [
    "DEPLOYMENT_JSON",
    "RUNTIMES",
    "DeploymentReport",
    "OnnxParityError",
    "QuantizeConfig",
    "argmax_agreement",
    "check_onnx",
    "export_onnx",
    "is_int8",
    "onnx_max_diffs",
    "open_session",
    "quantize_int8",
    "quantize_onnx_int8",
    "save_deployment",
]
