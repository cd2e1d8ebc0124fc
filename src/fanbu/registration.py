"""One registration pattern for everything a recipe names: derive stages, feedback strategies, robust
aggregation rules, privacy modes.

Each implementation declares itself where it is defined::

    STAGES = Catalog("stage", field="stages", capabilities={"makes_student": "..."})

    @STAGES.register("prune", summary="...", reference="https://...", config=PruneConfig,
                     capabilities={"makes_student"})
    def _prune(handle, ctx, config): ...

An :class:`Entry` records the name, a one-line summary, a reference URL (the paper or the documentation
of the method), the pydantic class of its settings, the implementation object and its capabilities
(facts other code asks about, such as "needs experts of the champion's architecture"). Capabilities
come from a vocabulary the catalog declares, so a misspelt one fails at import, not silently.

A :class:`Catalog` reads like a read-only dict of entries (``STAGES["prune"]``, ``"prune" in STAGES``,
``sorted(STAGES)``, ``STAGES.values()``), plus :meth:`Catalog.get` (a :class:`~fanbu.errors.ConfigError`
listing the known names), :meth:`Catalog.parse` (a recipe's ``[{name: {settings}}, "name2"]`` list into
validated configs, errors naming the field path) and :meth:`Catalog.with_capability`.

This module sits at the core layer: it imports only :mod:`fanbu.errors`, :mod:`fanbu.config`, the
standard library and pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from fanbu.config import Strict, short_repr, validate
from fanbu.errors import ConfigError

__all__ = ["Catalog", "Entry", "NoSettings"]

T = TypeVar("T")
E = TypeVar("E", bound="Entry")

_NAME = re.compile(r"[a-z][a-z0-9_]*")  # fullmatch: "$" alone would let a trailing newline through


class NoSettings(Strict):
    """The settings of an entry that has none (any key is refused)."""


@dataclass(frozen=True)
class Entry:
    """One registered implementation.

    Attributes:
        name: What a recipe calls it (lower case, digits and ``_``).
        summary: One line saying what it does.
        reference: An http(s) URL: the paper or documentation it implements (text may follow it).
        config: The pydantic class its settings validate against (:class:`NoSettings` when none).
        impl: The implementation: a function, a class or an object, whatever the catalog's users call.
        capabilities: Facts about it from the catalog's vocabulary (see :attr:`Catalog.capabilities`).
    """

    name: str
    summary: str
    reference: str
    config: type[BaseModel]
    impl: Any
    capabilities: frozenset[str] = frozenset()

    def has(self, capability: str) -> bool:
        """Whether this entry declares ``capability``."""
        return capability in self.capabilities


class Catalog(Generic[E]):
    """The registered entries of one kind, in registration order.

    Args:
        kind: What an entry is called in messages (``"stage"``, ``"feedback strategy"``); its last word
            names one item of a recipe list (``write each stage as ...``).
        field: The recipe field that lists entries (``"stages"``), the prefix of :meth:`parse`'s errors.
        capabilities: The capabilities entries may declare, each with what it means.
        entry: The record class (a subclass of :class:`Entry` may add properties for its users).
    """

    def __init__(
        self,
        kind: str,
        *,
        field: str,
        capabilities: Mapping[str, str] | None = None,
        entry: type[E] = Entry,  # type: ignore[assignment]
    ) -> None:
        self.kind = kind
        self.field = field
        self.capabilities: dict[str, str] = dict(capabilities or {})
        self._entry = entry
        self._entries: dict[str, E] = {}

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str,
        *,
        summary: str,
        reference: str,
        config: type[BaseModel],
        capabilities: Iterable[str] = (),
    ) -> Callable[[T], T]:
        """A decorator registering its target (function, class, object) under ``name``, returned unchanged.

        Raises:
            ValueError: ``name`` is taken or malformed, the summary is empty, the reference is not an
                http(s) URL, or a capability is not in the catalog's vocabulary.
            TypeError: ``config`` is not a pydantic model class.
        """
        where = f"{self.kind} {name!r}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{where}: a name is lower case letters, digits and '_', starting with a letter")
        if name in self._entries:
            raise ValueError(f"{where} is registered twice")
        if not isinstance(summary, str) or not summary.strip():
            raise ValueError(f"{where}: give a one-line summary of what it does")
        if not isinstance(reference, str) or not reference.startswith(("https://", "http://")):
            raise ValueError(f"{where}: the reference must be an http(s) URL (paper or documentation)")
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise TypeError(
                f"{where}: config must be a pydantic model class (fanbu.registration.NoSettings: none)"
            )
        caps = frozenset([capabilities] if isinstance(capabilities, str) else capabilities)
        unknown = sorted(caps - set(self.capabilities))
        if unknown:
            known = ", ".join(sorted(self.capabilities)) or "none"
            raise ValueError(f"{where}: unknown capabilities {unknown}; this catalog knows: {known}")

        def wrap(impl: T) -> T:
            if name in self._entries:
                raise ValueError(f"{where} is registered twice")
            self._entries[name] = self._entry(name, summary.strip(), reference, config, impl, caps)
            return impl

        return wrap

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> E:
        """The entry ``name``, or a ConfigError listing the known names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "none registered"
            raise ConfigError(f"unknown {self.kind} {short_repr(name, 80)}; known: {known}") from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def with_capability(self, capability: str) -> list[E]:
        """The entries declaring ``capability``, in registration order.

        Raises:
            ValueError: ``capability`` is not in the catalog's vocabulary (a typo would match nothing).
        """
        if capability not in self.capabilities:
            known = ", ".join(sorted(self.capabilities)) or "none"
            raise ValueError(f"{self.kind}: unknown capability {capability!r}; known: {known}")
        return [e for e in self._entries.values() if capability in e.capabilities]

    def parse(self, raw: list[Any]) -> list[tuple[str, BaseModel]]:
        """Validate a recipe list ``[{name: {settings}}, "name2", ...]`` into ``[(name, config), ...]``.

        A bare name (or ``name:`` with no settings) stands for ``{name: {}}``. Errors name the field path,
        e.g. ``stages.1: unknown stage 'shrink'; known: ...`` or ``stages.0.prune.layerz: unknown key``.

        Raises:
            ConfigError: an item is malformed, names an unknown entry, or has invalid settings.
        """
        noun = self.kind.split()[-1]
        parsed = []
        for index, item in enumerate(raw):
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                raise ConfigError(
                    f"{self.field}.{index}: write each {noun} as {{name: {{settings}}}}, got {short_repr(item)}"
                )
            ((name, settings),) = item.items()
            try:
                entry = self.get(name)
            except ConfigError as exc:
                raise ConfigError(f"{self.field}.{index}: {exc}") from None
            settings = {} if settings is None else settings  # `- prune:` with nothing after it: defaults
            parsed.append((name, validate(entry.config, settings, source="", at=f"{self.field}.{index}.{name}")))
        return parsed

    # ------------------------------------------------------------------ read-only dict
    def __getitem__(self, name: str) -> E:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The registered names (as :meth:`names`)."""
        return self.names()

    def values(self) -> list[E]:
        """The entries, in registration order."""
        return list(self._entries.values())

    def items(self) -> list[tuple[str, E]]:
        """``(name, entry)`` pairs, in registration order."""
        return list(self._entries.items())

    def __repr__(self) -> str:
        return f"Catalog({self.kind!r}: {', '.join(self._entries)})"
