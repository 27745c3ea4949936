"""Token stores: one API (:class:`TokenStore`), several backends.

Every name is imported from its module on first access (module ``__getattr__``):
importing the package loads no backend, so ``from oauth_callback.storage.file import
FileStore`` pays for the file store alone, and :class:`SQLiteStore`,
:class:`RedisStore` (``oauth-callback[redis]``), :class:`KeyringStore`
(``oauth-callback[keyring]``) and :class:`EncryptedStore`
(``oauth-callback[encryption]``, wraps any of them) never import ``sqlite3``,
``redis``, ``keyring`` or ``cryptography`` until used.
"""

from __future__ import annotations

import sys
from types import ModuleType

from .._lazy import TYPE_CHECKING, lazy_exports

if TYPE_CHECKING:
    from typing import Any

    from .base import TokenStore as TokenStore
    from .encrypted import EncryptedStore as EncryptedStore
    from .file import FileStore as FileStore
    from .file import RepairReport as RepairReport
    from .keyring import KeyringStore as KeyringStore
    from .memory import MemoryStore as MemoryStore
    from .migrate import MigrationError as MigrationError
    from .migrate import MigrationFailure as MigrationFailure
    from .migrate import MigrationReport as MigrationReport
    from .migrate import MigrationVerifyError as MigrationVerifyError
    from .migrate import migrate as migrate
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
# RedisStore, KeyringStore, EncryptedStore: not in __all__, so that a star import never
# fails for want of an optional dependency.
_LAZY = {
    "EncryptedStore": ".encrypted",
    "FileStore": ".file",
    "KeyringStore": ".keyring",
    "MemoryStore": ".memory",
    "MigrationError": ".migrate",
    "MigrationFailure": ".migrate",
    "MigrationReport": ".migrate",
    "MigrationVerifyError": ".migrate",
    "RedisStore": ".redis",
    "RepairReport": ".file",
    "SQLiteStore": ".sqlite",
    "TokenStore": ".base",
    "migrate": ".migrate",
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


class _Package(ModuleType):
    """``storage.migrate`` is the function :func:`~oauth_callback.storage.migrate.migrate`,
    as when the package imported it eagerly, even after its submodule of the same name is
    imported (Python then sets the package's attribute to the submodule)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "migrate" and isinstance(value, ModuleType):
            value = value.migrate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
