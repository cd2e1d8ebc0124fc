"""Quantisation for deployment: torch int8, ONNX export checked with onnxruntime, int8 ONNX, one directory.

``save_deployment`` writes the fp32 handle with its ONNX graphs and checks; ``load_deployment`` returns
a predictor for any of the four runtimes (``onnx_int8`` is the deployable one).
"""

from fanbu.derive.quantize.config import QuantizeConfig
from fanbu.derive.quantize.deploy import DeploymentReport, argmax_agreement, load_deployment, save_deployment
from fanbu.derive.quantize.graph import (
    OnnxParityError,
    check_onnx,
    export_onnx,
    onnx_max_diffs,
    open_session,
    quantize_onnx_int8,
)
from fanbu.derive.quantize.int8 import is_int8, quantize_int8
from fanbu.derive.quantize.manifest import DEPLOYMENT_JSON, RUNTIMES
from fanbu.derive.quantize.runtime import OnnxClassifier, Predictor

__all__ = [
    "DEPLOYMENT_JSON",
    "RUNTIMES",
    "DeploymentReport",
    "OnnxClassifier",
    "OnnxParityError",
    "Predictor",
    "QuantizeConfig",
    "argmax_agreement",
    "check_onnx",
    "export_onnx",
    "is_int8",
    "load_deployment",
    "onnx_max_diffs",
    "open_session",
    "quantize_int8",
    "quantize_onnx_int8",
    "save_deployment",
]
