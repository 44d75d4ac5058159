"""One tiny registry: name -> object, with lazy ``"module:attr"`` entries.

Stages (``training``), suites (``suites``) and backends (``harness.backends``) all
register through it. Entries are strings until first use, so listing names or
validating a config never imports torch, TRL or vLLM.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name; the message lists what is registered and the closest match."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named, lazily resolved mapping. ``what`` names the kind of entry in errors."""

    def __init__(self, what: str, entries: dict[str, str | T] | None = None) -> None:
        self.what = what
        self._entries: dict[str, str | T] = {}
        self._modules: dict[str, str] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: str | T) -> None:
        """Add ``name``; ``entry`` is an object or a lazy ``"module:attr"`` string."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        if isinstance(entry, str) and ":" not in entry:
            raise ValueError(f"lazy {self.what} entry for {name!r} must look like 'module:attr', got {entry!r}")
        self._entries[name] = entry
        self._modules[name] = entry.split(":", 1)[0] if isinstance(entry, str) else getattr(entry, "__module__", "")

    def module_of(self, name: str) -> str:
        """The module that defines ``name`` (without importing it): what its code fingerprint starts from."""
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        return self._modules[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unknown_message(self, name: str) -> str:
        """The error text for an unknown ``name`` (also used by config validation)."""
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.what} {name!r}{hint} (registered: {', '.join(self.names())})"

    def get(self, name: str) -> T:
        """Resolve ``name``, importing its module on first use."""
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, attr = entry.split(":", 1)
            obj: Any = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = obj
            return obj
        return entry
