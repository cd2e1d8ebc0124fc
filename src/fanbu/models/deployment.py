"""``deployment.json``: what a deployment directory holds, how it was checked, and file fingerprints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanbu.errors import ModelError
from fanbu.io import atomic_write_json, sha256_file, verify_sha256

DEPLOYMENT_JSON = "deployment.json"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
RUNTIMES = ("onnx_int8", "onnx", "torch_int8", "torch")
RUNTIME_FILES = {"onnx": ONNX_FILE, "onnx_int8": ONNX_INT8_FILE}
_REQUIRED = {"runtimes", "deployable", "labels", "max_length", "sha256"}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``deployment.json`` atomically, adding the sha256 of each ONNX file present."""
    record = dict(manifest)
    record["sha256"] = {
        name: sha256_file(directory / name) for name in RUNTIME_FILES.values() if (directory / name).is_file()
    }
    return atomic_write_json(directory / DEPLOYMENT_JSON, record)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read ``deployment.json``.

    Raises:
        ModelError: the file is missing, not JSON, or lacks the fields a deployment needs.
    """
    path = Path(directory) / DEPLOYMENT_JSON
    if not path.is_file():
        raise ModelError(
            f"{path}: not found, so {directory} is not a deployment; write one with save_deployment "
            "(a plain saved model loads with EncoderHandle.load)"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc}); run save_deployment again") from None
    if not isinstance(record, dict) or not _REQUIRED <= set(record):
        missing = sorted(_REQUIRED - set(record)) if isinstance(record, dict) else sorted(_REQUIRED)
        raise ModelError(f"{path}: missing {missing}; run save_deployment again")
    return record


def check_runtime(directory: str | Path, manifest: dict[str, Any], runtime: str) -> None:
    """Check ``runtime`` is known and was written into this deployment."""
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; pick one of {', '.join(RUNTIMES)}")
    if runtime not in manifest["runtimes"]:
        raise ModelError(
            f"{directory}: runtime {runtime!r} was not written (available: {', '.join(manifest['runtimes'])}); "
            "run save_deployment again with it enabled in QuantizeConfig"
        )


def verified_file(directory: str | Path, manifest: dict[str, Any], name: str) -> Path:
    """The path of an ONNX file of the deployment after checking it against its recorded sha256."""
    path = Path(directory) / name
    expected = manifest["sha256"].get(name)
    if expected is None:
        raise ModelError(f"{path}: not part of this deployment ({DEPLOYMENT_JSON} lists no sha256 for it)")
    verify_sha256(path, expected, DEPLOYMENT_JSON, "restore the file or run save_deployment again")
    return path
