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
from .models import ClientInfo, OAuthSession, Tokens

__version__ = "0.1.0"

__all__ = [
    "CallbackCancelled",
    "CallbackError",
    "CallbackTimeout",
    "ClientInfo",
    "DiscoveryError",
    "InsecureHostError",
    "OAuthCallbackError",
    "OAuthError",
    "OAuthSession",
    "OAuthStateError",
    "PortInUseError",
    "ReauthRequired",
    "StoreCorruptError",
    "StoreError",
    "StoreLockTimeout",
    "StorePermissionError",
    "StoreUnavailableError",
    "StoreWriteError",
    "TokenEndpointError",
    "Tokens",
    "__version__",
]
