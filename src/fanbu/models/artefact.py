"""Saved model directories: provenance (``fanbu.json``), a model card, and weight checks.

Every handle saves into one directory that alone tells where the model came from: ``fanbu.json``
holds the provenance (recipe, parents, data fingerprints, base model), the handle kind and the sha256
of each ``*.safetensors`` file; ``README.md`` is a Hugging Face model card whose YAML front matter
carries ``base_model`` / ``base_model_relation``; ``recipe.resolved.yaml`` is the resolved recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open

import fanbu
from fanbu.config import RESOLVED_RECIPE
from fanbu.errors import ModelError
from fanbu.io import atomic_directory, atomic_write_json, atomic_write_text, sha256_file, verify_sha256

FANBU_JSON = "fanbu.json"
MODEL_CARD = "README.md"
FORMAT_VERSION = 1
RELATIONS = ("finetune", "adapter", "quantized", "merge")
KINDS = ("encoder", "moe", "lora", "causal_lm", "module", "adapter_stack")


@dataclass
class Provenance:
    """Where a model came from: the recipe that made it, its parents, data and base model."""

    recipe: dict[str, Any] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    data_fingerprints: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    base_model_relation: str | None = None
    name: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    fanbu_version: str = fanbu.__version__

    def __post_init__(self) -> None:
        if self.base_model_relation is not None and self.base_model_relation not in RELATIONS:
            raise ModelError(
                f"base_model_relation {self.base_model_relation!r} is not one of {', '.join(RELATIONS)} "
                "(or None); pick the one that says how this model derives from base_model"
            )

    def to_dict(self) -> dict[str, Any]:
        """The provenance as a JSON-able mapping."""
        return dataclasses.asdict(self)


def write_provenance(directory: Path, provenance: Provenance, kind: str) -> None:
    """Write ``fanbu.json``, the model card and the resolved recipe into a model directory.

    Call it last, after every ``*.safetensors`` file is written: their sha256 go into ``fanbu.json``.
    """
    if kind not in KINDS:
        raise ModelError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    directory = Path(directory)
    weights = {p.name: sha256_file(p) for p in sorted(directory.glob("*.safetensors"))}
    record = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": provenance.to_dict(),
        "weights": weights,
    }
    atomic_write_json(directory / FANBU_JSON, record)
    atomic_write_text(directory / MODEL_CARD, model_card(provenance, kind))
    recipe_text = yaml.safe_dump(json.loads(json.dumps(provenance.recipe, default=str)), sort_keys=False)
    atomic_write_text(directory / RESOLVED_RECIPE, recipe_text)


def _read_record(directory: Path) -> dict[str, Any]:
    path = Path(directory) / FANBU_JSON
    if not path.is_file():
        raise ModelError(
            f"{path}: not found, so {directory} is not a fanbu model directory; save it with a handle's "
            "save(), or load a plain Hugging Face directory with EncoderHandle/CausalLMHandle.from_source"
        )
    record = read_json(path, "re-save the model or restore the file")
    if not isinstance(record, dict) or not {"kind", "provenance", "weights"} <= set(record):
        raise ModelError(
            f"{path}: missing 'kind', 'provenance' or 'weights'; re-save the model or restore the file"
        )
    weights = record["weights"]
    if not isinstance(weights, dict) or not all(
        isinstance(name, str) and isinstance(digest, str) for name, digest in weights.items()
    ):
        raise ModelError(
            f"{path}: 'weights' must map each weights file name to its sha256 (a hex string), got "
            f"{_short(weights)}; re-save the model or restore the file"
        )
    return record


def read_json(path: Path, remedy: str) -> Any:
    """The JSON in ``path``; a missing, unreadable, non-UTF-8 or malformed file raises :class:`ModelError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc}); {remedy}") from None
    except RecursionError:
        raise ModelError(f"{path}: not valid JSON (nested too deeply); {remedy}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise ModelError(f"{path}: not valid JSON ({exc}); {remedy}") from None


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


# The JSON type of each provenance field (None allowed where the field's default is None).
_PROVENANCE_TYPES: dict[str, tuple[type, ...]] = {
    "recipe": (dict,),
    "parents": (list,),
    "data_fingerprints": (dict,),
    "base_model": (str, type(None)),
    "base_model_relation": (str, type(None)),
    "name": (str, type(None)),
    "metrics": (dict,),
    "extra": (dict,),
    "fanbu_version": (str,),
}


def read_provenance(directory: Path) -> tuple[Provenance, str]:
    """Read ``fanbu.json``: the provenance and the handle kind.

    Raises:
        ModelError: the file is missing, is not JSON, or lacks the expected fields (or they have the
            wrong JSON types).
    """
    record = _read_record(directory)
    path = Path(directory) / FANBU_JSON
    data = record["provenance"]
    known = {f.name for f in dataclasses.fields(Provenance)}
    if not isinstance(data, dict) or not set(data) <= known:
        unknown = sorted(map(str, set(data) - known)) if isinstance(data, dict) else _short(data)
        raise ModelError(f"{path}: unexpected provenance fields {unknown}; re-save the model")
    for name, value in data.items():
        if not isinstance(value, _PROVENANCE_TYPES[name]) or (
            name == "parents" and not all(isinstance(parent, str) for parent in value)
        ):
            raise ModelError(
                f"{path}: provenance field {name!r} holds {_short(value)}, not the "
                f"{' or '.join(t.__name__ for t in _PROVENANCE_TYPES[name])} fanbu writes; re-save the model"
            )
    kind = record["kind"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise ModelError(f"{path}: unknown kind {_short(kind)}; expected one of {', '.join(KINDS)}")
    return Provenance(**data), kind


def verify_weights(directory: Path) -> None:
    """Check every weights file of the directory against ``fanbu.json`` before anything is loaded.

    Each ``*.safetensors`` file present is listed there; each listed file is a plain file name, present,
    inside the directory (a symlink pointing out of it is refused), has the recorded sha256 and a
    readable header.

    Raises:
        ModelError: naming the missing, unlisted, outside, corrupt or truncated file and what to do.
    """
    directory = Path(directory)
    weights = _read_record(directory)["weights"]
    recorded = directory / FANBU_JSON
    unlisted = sorted(p.name for p in directory.glob("*.safetensors") if p.name not in weights)
    if unlisted:
        raise ModelError(
            f"{directory / unlisted[0]}: not listed in {recorded}, so its sha256 cannot be checked; "
            "re-save the model, or remove the file if it does not belong there"
        )
    root = directory.resolve()
    for name, expected in sorted(weights.items()):
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise ModelError(
                f"{recorded}: weights file name {_short(name)} is not a plain file name in the model "
                "directory; re-save the model or restore the file"
            )
        path = directory / name
        if path.is_symlink():
            try:
                target = path.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                raise ModelError(f"{path}: a symlink that loops; restore the file") from None
            if root not in target.parents:
                raise ModelError(
                    f"{path}: a symlink to {target}, outside the model directory {root}; fanbu loads "
                    "weights only from inside it: copy the file in place of the link"
                )
        verify_sha256(path, expected, FANBU_JSON, "re-save the model or restore the file")
        check_safetensors(path)


def check_safetensors(path: Path) -> None:
    """Parse a safetensors file's header and tensor table; a damaged file raises :class:`ModelError`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                handle.get_slice(key).get_shape()
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: not a readable safetensors file ({exc}); re-save the model or restore the file"
        ) from None


# safetensors' dtype names and the torch dtypes they load as.
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def dtype_mismatches(path: Path, state: Mapping[str, torch.Tensor]) -> list[str]:
    """The tensors of the safetensors file ``path`` stored with another dtype than the module's tensor of
    the same name in ``state`` (``load_state_dict`` would cast them silently), as readable lines."""
    found = []
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            dtype = _DTYPES.get(handle.get_slice(key).get_dtype())
            if key in state and dtype is not None and state[key].dtype != dtype:
                found.append(f"{key} is stored as {dtype}, but the model holds {state[key].dtype}")
    return found


def model_card(provenance: Provenance, kind: str) -> str:
    """A Hugging Face model card: YAML front matter and a short body."""
    relation = provenance.base_model_relation
    front: dict[str, Any] = {}
    if provenance.base_model is not None:
        front["base_model"] = provenance.base_model
    if relation is not None:
        front["base_model_relation"] = relation
    front["library_name"] = "pytorch" if kind == "module" else "transformers"
    front["tags"] = ["fanbu", kind] + ([relation] if relation else [])
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    lines += [f"# {provenance.name or 'fanbu model'}", "", f"- kind: `{kind}`"]
    lines.append(f"- made with fanbu {provenance.fanbu_version}")
    if provenance.base_model:
        lines.append(f"- base model: `{provenance.base_model}` ({relation or 'relation not recorded'})")
    lines.append(f"- parents: {', '.join(f'`{p}`' for p in provenance.parents) or 'none'}")
    if provenance.data_fingerprints:
        lines += ["", "## Data", ""]
        lines += [f"- {k}: `{v}`" for k, v in sorted(_flatten(provenance.data_fingerprints).items())]
    if provenance.metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(_flatten(provenance.metrics).items())]
    lines += ["", f"Provenance is in `{FANBU_JSON}`; the recipe in `{RESOLVED_RECIPE}`.", ""]
    return "\n".join(lines)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def expect_kind(directory: Path, kind: str, legacy: tuple[str, ...] = ()) -> Provenance:
    """Read the provenance, check the kind matches and the weights are intact; used by each ``load``.

    ``legacy`` names kinds that older fanbu versions wrote for the same layout.
    """
    provenance, found = read_provenance(directory)
    if found != kind and found not in legacy:
        raise ModelError(
            f"{directory} holds a {found!r} model, not {kind!r}; load it with fanbu.models.load_handle"
        )
    verify_weights(directory)
    return provenance


@contextlib.contextmanager
def model_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds (nothing half-saved)."""
    if Path(path).exists() and not overwrite:
        raise ModelError(f"{path} already exists; choose another path or pass overwrite=True")
    with atomic_directory(path, overwrite=overwrite) as tmp:
        yield tmp
