"""Open a store from a string: what the CLI's ``--store`` and config files accept.

* ``PATH`` or ``file:PATH``: :class:`FileStore` at ``PATH`` (``~`` expanded)
* ``file:`` alone or ``None``: :class:`FileStore` at its default path
* ``memory:``: a new :class:`MemoryStore`
* ``sqlite:PATH`` (or ``sqlite://PATH``): :class:`SQLiteStore` at ``PATH`` (``~`` expanded)
* ``redis://[user:password@]host[:port][/db][?prefix=P]`` or ``rediss://...`` (TLS):
  :class:`~oauth_callback.storage.redis.RedisStore` (needs ``oauth-callback[redis]``)
* ``keyring:SERVICE`` (or ``keyring://SERVICE``; ``keyring:`` alone: service
  ``oauth-callback``): :class:`~oauth_callback.storage.keyring.KeyringStore`, the OS
  keychain (needs ``oauth-callback[keyring]``)
"""

from __future__ import annotations

from .base import TokenStore
from .file import FileStore
from .memory import MemoryStore
from .sqlite import SQLiteStore

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
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"store URL {url!r} names no database file; use sqlite:PATH")
        return SQLiteStore(path, durable=durable)
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisStore  # optional dependency: imported only when asked for

        return RedisStore(url)
    if url.startswith("keyring:"):
        from .keyring import DEFAULT_SERVICE, KeyringStore  # optional dependency, as redis

        service = url[len("keyring:"):]
        if service.startswith("//"):
            service = service[2:]
        return KeyringStore(service or DEFAULT_SERVICE)
    scheme, sep, _ = url.partition(":")
    if sep and scheme.isalpha() and len(scheme) > 1 and "/" not in scheme:
        raise ValueError(
            f"unknown store URL scheme {scheme!r} in {url!r}; "
            "use a path, file:PATH, sqlite:PATH, keyring:SERVICE or memory:"
        )
    return FileStore(url, durable=durable)
