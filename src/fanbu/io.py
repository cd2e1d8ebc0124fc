"""Atomic file and directory writes, and content fingerprints.

Nothing fanbu writes is ever seen half-written: files go to a temporary name in the same directory
and are renamed over the target (``os.replace`` is atomic on POSIX); directories are assembled under
a temporary name and renamed into place.
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

from fanbu.errors import ModelError


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
