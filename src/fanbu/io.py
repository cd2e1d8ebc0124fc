"""Atomic file and directory writes, content fingerprints, and names that are safe to use as paths.

Nothing fanbu writes is ever seen half-written: files go to a temporary name in the same directory
and are renamed over the target (``os.replace`` is atomic on POSIX); directories are assembled under
a temporary name and renamed into place.

A name that becomes part of a path (a model, dataset or domain name, a run id) goes through
:func:`check_path_name` or :func:`safe_child`: ``..``, absolute paths, backslashes, NUL and other
control characters, a leading ``~`` and overlong names are refused before any file is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fanbu.errors import ConfigError, FanbuError, ModelError

MAX_PATH_NAME = 200  # characters in a name used as a path (a segment's limit on most filesystems is 255)


def check_path_name(
    name: object, what: str, *, nested: bool = False, error: type[FanbuError] = ConfigError
) -> str:
    """Return ``name`` if it stays below the directory it is joined to; else raise ``error``.

    A name is one path segment (or, with ``nested``, segments joined by ``/``): not empty, not ``.``
    or ``..``, no leading ``/`` or ``~``, no backslash, no NUL or other control character, at most
    :data:`MAX_PATH_NAME` characters.

    Raises:
        FanbuError: ``error``, saying what is wrong and what to pass instead.
    """
    if not isinstance(name, str):
        raise error(f"{what} must be a string, got {type(name).__name__} {name!r}")
    problem = _path_problem(name, nested)
    if problem is not None:
        shown = name if len(name) <= 80 else f"{name[:60]}...({len(name)} characters)"
        example = "'domain-1' or 'org/name'" if nested else "'domain-1'"
        raise error(f"invalid {what} {shown!r}: {problem}; it names a directory, so use e.g. {example}")
    return name


def _path_problem(name: str, nested: bool) -> str | None:
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_PATH_NAME:
        return f"it is longer than {MAX_PATH_NAME} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a NUL or another control character"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    segments = name.split("/")
    if not nested and len(segments) > 1:
        return "it holds a '/'"
    for segment in segments:
        if not segment.strip(". "):  # "", ".", "..", and what Windows would trim to them
            return f"it holds the path segment {segment!r} (no empty, '.' or '..' segments)"
        if segment.startswith("~"):
            return "a segment starts with '~' (a home directory)"
    return None


def safe_child(
    root: str | os.PathLike[str],
    *parts: str,
    what: str = "name",
    nested: bool = False,
    error: type[FanbuError] = ConfigError,
) -> Path:
    """``root / parts...``, each part checked by :func:`check_path_name`, and still under ``root``
    once both are resolved (a symlink on the way that points outside is refused too).

    Raises:
        FanbuError: ``error``, for a bad part or a path that resolves outside ``root``.
    """
    for part in parts:
        check_path_name(part, what, nested=nested, error=error)
    base = Path(root)
    child = base.joinpath(*parts)
    resolved_root, resolved = base.resolve(), child.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise error(
            f"invalid {what} {'/'.join(parts)!r}: {child} resolves to {resolved}, outside {resolved_root} "
            "(a symlink points out of it); remove the link or choose another name"
        )
    return child


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    Args:
        path: The final directory.
        overwrite: Replace an existing directory at ``path``; otherwise an existing one is an error.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; choose another path or pass overwrite=True")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, recorded_in: str, remedy: str) -> None:
    """Raise :class:`ModelError` unless ``path`` exists and hashes to ``expected``.

    Args:
        path: The file to check.
        expected: Its sha256 as recorded when it was written.
        recorded_in: Where ``expected`` was recorded (named in the message).
        remedy: What the user should do about a missing or damaged file.
    """
    if not path.is_file():
        raise ModelError(f"{path}: listed in {recorded_in} but missing; {remedy}")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"{path}: corrupt or truncated (sha256 {actual[:12]}… differs from {expected[:12]}… recorded in "
            f"{recorded_in}); {remedy}"
        )


def sha256_json(obj: Any) -> str:
    """Hex sha256 of ``obj`` serialised as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return sha256_bytes(text.encode("utf-8"))


def dir_size(path: str | os.PathLike[str]) -> int:
    """Total size in bytes of the regular files under ``path`` (or of ``path`` if it is a file)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
