"""Open a store from a string: what the CLI's ``--store`` and config files accept.

* ``PATH`` or ``file:PATH``: :class:`FileStore` at ``PATH`` (``~`` expanded)
* ``file:`` alone or ``None``: :class:`FileStore` at its default path
* ``memory:``: a new :class:`MemoryStore`
"""

from __future__ import annotations

from .base import TokenStore
from .file import FileStore
from .memory import MemoryStore

__all__ = ["open_store"]


def open_store(url: str | None = None, *, durable: bool = True) -> TokenStore:
    """Return the store that ``url`` names. Raises ``ValueError`` for an unknown scheme."""
    if url is None or url in ("", "file:"):
        return FileStore(durable=durable)
    if url == "memory:":
        return MemoryStore()
    if url.startswith("file:"):
        path = url[len("file:"):]
        if path.startswith("//"):
            path = path[2:]
        return FileStore(path, durable=durable)
    scheme, sep, _ = url.partition(":")
    if sep and scheme.isalpha() and len(scheme) > 1 and "/" not in scheme:
        raise ValueError(
            f"unknown store URL scheme {scheme!r} in {url!r}; use a path, file:PATH or memory:"
        )
    return FileStore(url, durable=durable)
