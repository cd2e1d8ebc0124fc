"""What curation produces and how it is configured: :class:`CurateConfig`, :class:`Example`, :class:`Curated`.

:mod:`fanbu.collect.curation` fills a :class:`Curated` from the logs and :mod:`fanbu.collect.dataset`
writes it to disk; both import these types from here, so neither imports the other's module back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, field_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.io import check_path_name

TIERS = ("human", "pseudo", "hard")


class CurateConfig(Strict):
    """How ``fanbu collect`` turns logs into a dataset."""

    name: str = Field("collected", min_length=1, description="Dataset name in the registry.")
    domains: list[str] | None = Field(None, description="Only these heads/domains (default: all logged).")
    targets: list[str] | None = Field(
        None,
        description="Only predictions clients asked of these served models or cascades (the request's "
        "`model`), e.g. one deployment's routes; default: all.",
    )
    quota: int = Field(2000, ge=1, description="Most labelled examples per domain.")
    unlabeled_quota: int = Field(5000, ge=0, description="Most unlabeled texts per domain.")
    min_confidence: float = Field(0.9, ge=0.0, le=1.0, description="Pseudo-labels need this top probability.")
    hard_below: float = Field(0.5, ge=0.0, le=1.0, description="Below this confidence an answer is hard.")
    label_with: str | None = Field(
        None,
        description="Large model (name or name:vN) that labels hard examples "
        "the cascade did not escalate; default: only logged large answers count.",
    )
    runtime: str = Field("onnx_int8", description="Runtime when label_with is a quantize deployment.")
    out: str | None = Field(None, description="Where the JSONL files go (default: <home>/datasets).")

    @field_validator("name")
    @classmethod
    def _path_safe_name(cls, name: str) -> str:
        # the name is a directory under `out`: no '..', absolute path, backslash, NUL or leading '~'
        try:
            return check_path_name(name, "dataset name", nested=True)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


@dataclass
class Example:
    """One curated example."""

    domain: str
    text: str
    label: str
    tier: str
    prediction_id: str


@dataclass
class Curated:
    """Per domain: labelled examples (best tier first), unlabeled texts, and label names."""

    labeled: dict[str, list[Example]] = field(default_factory=dict)
    unlabeled: dict[str, list[str]] = field(default_factory=dict)
    label_names: dict[str, list[str]] = field(default_factory=dict)
    skipped_hash_only: int = 0
