"""Fixtures for the quantisation tests: tiny handles, texts, and one export and one deployment shared by all."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanbu.derive.quantize import QuantizeConfig, export_onnx, save_deployment
from fanbu.derive.quantize.deploy import DeploymentReport
from fanbu.models import EncoderHandle, Provenance

TEXTS = [
    "the patients were happy with the treatment",
    "computer hardware prices fell",
    "a",
    "religion and politics, again!",
    "the team won the game in the second half",
    "space science needs better software and hardware",
    "good",
    "the doctor said the drug risk was low but the patient was sad",
]


def two_head_handle(hidden: int = 32, intermediate: int = 64, heads: int = 2, seed: int = 1) -> EncoderHandle:
    """A tiny random BERT handle with heads ``topic`` (3 labels) and ``sentiment`` (2 labels)."""
    handle = EncoderHandle.tiny(
        hidden_size=hidden, num_heads=heads, intermediate_size=intermediate, seed=seed
    )
    handle.add_head("topic", ["sci", "talk", "rec"])
    handle.add_head("sentiment", ["neg", "pos"])
    return handle


@pytest.fixture
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture
def handle() -> EncoderHandle:
    return two_head_handle()


@pytest.fixture(scope="session")
def wide_handle() -> EncoderHandle:
    """Wide enough (hidden 64, ffn 256) that int8 weights outweigh the quantisation overhead; read-only."""
    return two_head_handle(hidden=64, intermediate=256, heads=4, seed=3)


@pytest.fixture(scope="session")
def exported(wide_handle: EncoderHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``wide_handle`` exported once to fp32 ONNX (both heads); read-only."""
    return export_onnx(wide_handle, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def deployment(
    wide_handle: EncoderHandle, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, DeploymentReport]:
    """A full deployment (all four runtimes) of ``wide_handle``, saved once; read-only."""
    directory = tmp_path_factory.mktemp("deploy") / "med-small"
    provenance = Provenance(name="med-small", parents=["distilled-1"], base_model_relation="finetune")
    report = save_deployment(wide_handle, directory, QuantizeConfig(), provenance, TEXTS)
    return directory, report
