"""QuantizeConfig: defaults, cross-field checks, and errors that name the field."""

from __future__ import annotations

import pytest

from fanbu.config import validate
from fanbu.derive.quantize import QuantizeConfig
from fanbu.errors import ConfigError


def test_defaults_build_every_runtime() -> None:
    config = QuantizeConfig()
    assert (config.int8, config.onnx, config.onnx_int8) == (True, True, True)
    assert config.opset == 17 and config.atol == 1e-4 and config.check_texts == 16


def test_onnx_int8_without_onnx_is_rejected() -> None:
    with pytest.raises(ConfigError, match="onnx_int8 quantises the exported ONNX graph; set onnx: true"):
        validate(QuantizeConfig, {"onnx": False})
    assert validate(QuantizeConfig, {"onnx": False, "onnx_int8": False}).int8 is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"opset": 11}, r"quantize: opset: Input should be greater than or equal to 14 \(got 11\)"),
        ({"atol": -1.0}, r"quantize: atol: Input should be greater than or equal to 0"),
        ({"check_texts": 0}, r"quantize: check_texts: Input should be greater than or equal to 1"),
        ({"int4": True}, r"quantize: int4: unknown key"),
    ],
)
def test_bad_fields_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(QuantizeConfig, data, source="quantize")
