"""oauth-callback: OAuth 2.0 loopback authorization and crash-safe token storage.

Importing the package is cheap: it loads only :mod:`oauth_callback.errors` (every
exception is exported from there).
Every other name below is imported from its module on first access (module
``__getattr__``), so ``import oauth_callback`` pulls in no HTTP client,
``ssl``, ``sqlite3``, ``webbrowser``, ``email`` or ``anyio``; a script that
only reads a stored token never pays for the login machinery.
"""

from __future__ import annotations

from . import errors as _errors
from ._lazy import TYPE_CHECKING, lazy_exports
from .errors import *  # noqa: F403 - every exception, eagerly (errors.py is pure and small)

if TYPE_CHECKING:  # what the lazy names are, for mypy and IDEs
    from .browser import open_url as open_url
    from .flow import OAuthClient as OAuthClient
    from .fs import atomic_write as atomic_write
    from .keys import default_key as default_key
    from .keys import resolve_key as resolve_key
    from .loopback import CallbackServer as CallbackServer
    from .loopback import RequestInfo as RequestInfo
    from .loopback import get_auth_code as get_auth_code
    from .loopback import get_auth_code_async as get_auth_code_async
    from .manager import TokenManager as TokenManager
    from .models import ClientInfo as ClientInfo
    from .models import Identity as Identity
    from .models import OAuthSession as OAuthSession
    from .models import Tokens as Tokens
    from .pkce import generate_pkce as generate_pkce
    from .pkce import generate_state as generate_state
    from .pkce import pkce_challenge as pkce_challenge
    from .protocol import CallbackResult as CallbackResult
    from .protocol import ServerMetadata as ServerMetadata
    from .storage.base import TokenStore as TokenStore
    from .storage.file import FileStore as FileStore
    from .storage.file import RepairReport as RepairReport
    from .storage.keyring import KeyringStore as KeyringStore
    from .storage.memory import MemoryStore as MemoryStore
    from .storage.redis import RedisStore as RedisStore
    from .storage.sqlite import SQLiteStore as SQLiteStore

__version__ = "0.1.0"

#: Lazily exported name -> the module that defines it.
_LAZY: dict[str, str] = {
    "CallbackResult": ".protocol",
    "CallbackServer": ".loopback",
    "ClientInfo": ".models",
    "FileStore": ".storage.file",
    "Identity": ".models",
    "KeyringStore": ".storage.keyring",
    "MemoryStore": ".storage.memory",
    "OAuthClient": ".flow",
    "OAuthSession": ".models",
    "RedisStore": ".storage.redis",
    "RepairReport": ".storage.file",
    "RequestInfo": ".loopback",
    "SQLiteStore": ".storage.sqlite",
    "ServerMetadata": ".protocol",
    "TokenManager": ".manager",
    "TokenStore": ".storage.base",
    "Tokens": ".models",
    "atomic_write": ".fs",
    "default_key": ".keys",
    "generate_pkce": ".pkce",
    "generate_state": ".pkce",
    "get_auth_code": ".loopback",
    "get_auth_code_async": ".loopback",
    "open_url": ".browser",
    "pkce_challenge": ".pkce",
    "resolve_key": ".keys",
}

# RedisStore and KeyringStore need an extra (redis, keyring): importable by
# name, but left out of __all__ so that a star import never fails for want of one.
__all__ = [
    *_errors.__all__,
    "CallbackResult",
    "CallbackServer",
    "ClientInfo",
    "FileStore",
    "Identity",
    "MemoryStore",
    "OAuthClient",
    "OAuthSession",
    "RepairReport",
    "RequestInfo",
    "SQLiteStore",
    "ServerMetadata",
    "TokenManager",
    "TokenStore",
    "Tokens",
    "__version__",
    "atomic_write",
    "default_key",
    "generate_pkce",
    "generate_state",
    "get_auth_code",
    "get_auth_code_async",
    "open_url",
    "pkce_challenge",
    "resolve_key",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
