"""A bench's work directory: finished parts (JSON) and models kept between runs, so a rerun resumes.

Each part is written atomically once it is finished; a rerun with the same directory reads it back
instead of computing it again. A part may carry a fingerprint of its settings: a cached result whose
fingerprint differs is computed again, so a changed setting never reuses a stale number. Benches put
the fingerprint of the code a part runs (:func:`source_fingerprint`) into its settings, so a change of
that code makes it again too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.errors import ModelError
from fanbu.io import atomic_write_json
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.models.loading import load_handle


def fingerprint(settings: Any) -> str:
    """A short stable hash of JSON-serialisable ``settings``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def source_fingerprint(*packages: str) -> str:
    """A short hash of the Python source of ``packages`` (dotted names, e.g. ``"fanbu.train"``).

    A package counts with every module under it, sub-packages included; a plain module
    (``"fanbu.bench.work"``) counts alone. Part of a kept part's settings, it makes the part again after
    a change of the code that made it.
    """
    digest = hashlib.sha256()
    for name in sorted(packages):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no package {name!r} to fingerprint")
        origin = Path(spec.origin)
        root = origin.parent
        files = sorted(root.rglob("*.py")) if spec.submodule_search_locations is not None else [origin]
        for path in files:
            digest.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class WorkDir:
    """Results under ``root/results``, models under ``root/models``."""

    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.console = console

    def result(
        self, name: str, make: Callable[[], dict[str, Any]], settings: Any = None, kind: str = ""
    ) -> dict[str, Any]:
        """The result of part ``name``: read back when finished earlier with the same settings, else made now.

        ``kind`` prefixes the name on the console (e.g. "baseline").
        """
        path = self.root / "results" / f"{name.replace(':', '-')}.json"
        key = None if settings is None else fingerprint(settings)
        if path.is_file():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                self.console.print(f"[yellow]{path}: unreadable ({exc}); computing it again[/]")
            else:
                if cached.get("fingerprint") == key:
                    self.console.print(f"[dim]{name}: finished in an earlier run ({path})[/]")
                    return cached
                self.console.print(f"[yellow]{name}: settings changed since {path}; computing it again[/]")
        self.console.print(f"{kind} [bold]{name}[/]" if kind else f"[bold]{name}[/]")
        started = time.perf_counter()
        result = make()
        result.setdefault("seconds", time.perf_counter() - started)
        if key is not None:
            result["fingerprint"] = key
        atomic_write_json(path, result)
        return result

    def model(
        self, name: str, make: Callable[[], EncoderHandle], max_length: int, settings: Any = None
    ) -> EncoderHandle:
        """A model kept under ``models/name``: loaded (in eval mode), or made now and saved there.

        With ``settings`` (what the model was made with) their fingerprint is kept next to the model;
        a kept model made with other settings, or without a record of them, is made again.
        """
        path = self.root / "models" / name
        record = self.root / "models" / f"{name}.settings.json"
        key = None if settings is None else fingerprint(settings)
        if (path / "fanbu.json").is_file() or (path / "model.safetensors").is_file():
            if key is not None and _recorded(record) != key:
                self.console.print(f"[yellow]{path}: made with other settings; making it again[/]")
            else:
                try:
                    handle = load_handle(path)  # of whatever classifier kind was kept (MoE included)
                    if not isinstance(handle, EncoderHandle):
                        raise ModelError(f"a {type(handle).__name__}, not an encoder classifier")
                    handle.max_length = max_length
                    handle.model.eval()
                    return handle
                except Exception as exc:  # noqa: BLE001 - a half-written cache entry is rebuilt
                    self.console.print(f"[yellow]{path}: unreadable ({exc}); rebuilding[/]")
        handle = make()
        handle.model.eval()
        handle.save(path, handle.provenance or Provenance(name=name), overwrite=True)
        if key is not None:
            atomic_write_json(record, {"fingerprint": key, "settings": settings})
        return handle


def _recorded(path: Path) -> str | None:
    """The fingerprint kept in a model's settings record, or None when there is none to read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
