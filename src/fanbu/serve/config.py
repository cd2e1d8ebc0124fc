"""``fanbu serve`` settings: where it listens, who may call it, what it keeps, and its limits."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from fanbu.collect.hashing import PrivacyMode
from fanbu.config import Strict
from fanbu.serve.lm_config import GenerationLimits, LMCascadeConfig


class CascadeConfig(Strict):
    """Edge-to-large: the small model answers; below ``threshold`` confidence the large one does."""

    small: str = Field(description="The small model: name or name:vN.")
    large: str = Field(description="The large model: name or name:vN; same head names and labels.")
    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Escalate when the small model's top probability is below this."
    )
    target_escalation_rate: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="If set, tune the threshold at start-up from the logged "
        "confidences of the small model so that about this share of requests escalates.",
    )
    min_samples: int = Field(100, ge=1, description="Logged texts needed to tune; fewer keeps `threshold`.")


class Limits(Strict):
    """Bad input and overload are refused with a JSON error that names the limit."""

    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body (413 above).")
    max_batch_texts: int = Field(64, ge=1, description="Most texts in one predict request (422 above).")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text in characters (422 above).")
    max_queue: int = Field(256, ge=1, description="Requests waiting per model before 429 + Retry-After.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with 429.")


class Batching(Strict):
    """Micro-batching: concurrent requests for the same model and head run as one batch."""

    max_batch: int = Field(32, ge=1, description="Most texts gathered into one batch.")
    max_wait_ms: float = Field(
        5.0,
        ge=0.0,
        description="How long after its arrival the first request of a batch waits for company "
        "(one that already waited behind a running batch goes at once).",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Batches of one model and head computed at once, each in its own thread; with "
        "`threads: 1`, one batch per core keeps every core busy without intra-op synchronisation.",
    )


class ServeConfig(Strict):
    """The server's settings (YAML via --config, or key=value overrides)."""

    host: str = Field("127.0.0.1", description="Address to bind; loopback only by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    auth: bool = Field(True, description="Require `Authorization: Bearer <token>` on /v1 and /metrics.")
    token: str | None = Field(
        None,
        min_length=16,
        description="The API token; default: FANBU_SERVE_TOKEN, else one is generated "
        "at first start, shown once, and only its hash kept in the home directory.",
    )
    models: list[str] = Field(
        default_factory=list,
        description="Models to load at start-up, classifiers and causal LMs (others load on first use).",
    )
    only_listed: bool = Field(False, description="Serve only `models` and the cascades' models.")
    cascades: dict[str, CascadeConfig] = Field(
        default_factory=dict, description="Name -> cascade; clients ask for the name as their model."
    )
    lm_cascades: dict[str, LMCascadeConfig] = Field(
        default_factory=dict,
        description="Name -> LM cascade; clients name it as the model of /v1/generate or /v1/completions.",
    )
    generation: GenerationLimits = Field(default_factory=GenerationLimits)
    runtime: Literal["onnx_int8", "onnx", "torch_int8", "torch"] = Field(
        "onnx_int8", description="Runtime for quantize deployments (plain handles run in torch)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads of each model run, onnxruntime and torch alike (torch's count is "
        "process-wide); default: all cores.",
    )
    privacy: PrivacyMode = Field(
        "mask",
        description="Store the text, only its hash, or the text with "
        "e-mails, phone numbers and long digit runs masked.",
    )
    watch_seconds: float | None = Field(
        None,
        gt=0.0,
        description="Poll the registry this often and swap a served name to its newer version, as "
        "POST /v1/models/reload does; default: off (reload by request).",
    )
    limits: Limits = Field(default_factory=Limits)
    batching: Batching = Field(default_factory=Batching)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "warning"

    @model_validator(mode="after")
    def _secure(self) -> ServeConfig:
        if not self.auth and not _is_loopback(self.host):
            raise ValueError(
                f"auth is off but host {self.host!r} is not a loopback address: turn auth on "
                "or bind to 127.0.0.1"
            )
        if ":" in "".join([*self.cascades, *self.lm_cascades]):
            raise ValueError("cascade names must not contain ':' (it separates model versions)")
        both = sorted(set(self.cascades) & set(self.lm_cascades))
        if both:
            raise ValueError(f"{both} name both a cascade and an LM cascade: give each its own name")
        if self.generation.default_max_tokens > self.generation.max_tokens:
            raise ValueError(
                f"generation.default_max_tokens ({self.generation.default_max_tokens}) is over "
                f"generation.max_tokens ({self.generation.max_tokens}): lower it or raise the cap"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
