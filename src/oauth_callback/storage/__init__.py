"""Token stores: one API (:class:`TokenStore`), several backends.

:class:`FileStore` and :class:`MemoryStore` are imported with the package;
:class:`SQLiteStore`, :class:`RedisStore` (``oauth-callback[redis]``) and
:class:`KeyringStore` (``oauth-callback[keyring]``) and :class:`EncryptedStore`
(``oauth-callback[encryption]``, wraps any of them) on first access, so importing
the package never imports ``sqlite3``, ``redis``, ``keyring`` or ``cryptography``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .base import TokenStore
from .file import FileStore, RepairReport
from .memory import MemoryStore
from .migrate import (
    MigrationError,
    MigrationFailure,
    MigrationReport,
    MigrationVerifyError,
    migrate,
)

if TYPE_CHECKING:
    from .encrypted import EncryptedStore as EncryptedStore
    from .redis import RedisStore as RedisStore
    from .sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "FileStore",
    "MemoryStore",
    "MigrationError",
    "MigrationFailure",
    "MigrationReport",
    "MigrationVerifyError",
    "RepairReport",
    "SQLiteStore",
    "TokenStore",
    "migrate",
]
# Not in __all__: a star import must not fail for want of an optional dependency.
_LAZY = {
    "SQLiteStore": ".sqlite",
    "RedisStore": ".redis",
    "KeyringStore": ".keyring",
    "EncryptedStore": ".encrypted",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
