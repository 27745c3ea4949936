"""oauth-callback: OAuth 2.0 loopback authorization and crash-safe token storage."""

from __future__ import annotations

from .errors import (
    CallbackCancelled,
    CallbackError,
    CallbackTimeout,
    DiscoveryError,
    InsecureHostError,
    OAuthCallbackError,
    OAuthError,
    OAuthStateError,
    PortInUseError,
    ReauthRequired,
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    StorePermissionError,
    StoreUnavailableError,
    StoreWriteError,
    TokenEndpointError,
)
from .fs import atomic_write
from .models import ClientInfo, OAuthSession, Tokens
from .storage import FileStore, MemoryStore, RepairReport, TokenStore

__version__ = "0.1.0"

__all__ = [
    "CallbackCancelled",
    "CallbackError",
    "CallbackTimeout",
    "ClientInfo",
    "DiscoveryError",
    "FileStore",
    "InsecureHostError",
    "MemoryStore",
    "OAuthCallbackError",
    "OAuthError",
    "OAuthSession",
    "OAuthStateError",
    "PortInUseError",
    "ReauthRequired",
    "RepairReport",
    "StoreCorruptError",
    "StoreError",
    "StoreLockTimeout",
    "StorePermissionError",
    "StoreUnavailableError",
    "StoreWriteError",
    "TokenEndpointError",
    "TokenStore",
    "Tokens",
    "__version__",
    "atomic_write",
]
