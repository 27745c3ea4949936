"""MemoryStore: a process-local store for tests and short-lived programs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .base import Section, TokenStore

__all__ = ["MemoryStore"]


class MemoryStore(TokenStore):
    """Tokens in a dict. Thread-safe; nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[Section, dict[str, Any]] = {"tokens": {}, "clients": {}, "sessions": {}}

    def _read(self, section: Section, key: str) -> Any:
        return self._data[section].get(key)

    def _keys(self, section: Section) -> list[str]:
        with self._lock:
            return list(self._data[section])

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        with self._lock:
            current = self._data[section].get(key)
            new = fn(current)
            if new is current:
                return current
            if new is None:
                self._data[section].pop(key, None)
            else:
                self._data[section][key] = new
            return new

    def clear(self) -> None:
        """Remove everything."""
        with self._lock:
            for section in self._data.values():
                section.clear()

    def describe(self) -> str:
        """``memory:``."""
        return "memory:"

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._data['tokens'])})"
