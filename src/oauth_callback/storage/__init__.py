"""Token stores: one API (:class:`TokenStore`), several backends."""

from __future__ import annotations

from .base import TokenStore
from .file import FileStore, RepairReport
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["FileStore", "MemoryStore", "RepairReport", "SQLiteStore", "TokenStore"]
