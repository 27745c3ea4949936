"""oauth-callback: OAuth 2.0 loopback authorization and crash-safe token storage."""

from __future__ import annotations

from .errors import (
    CallbackCancelled,
    CallbackError,
    CallbackTimeout,
    DiscoveryError,
    InsecureHostError,
    InsufficientScopeError,
    InvalidClientError,
    OAuthCallbackError,
    OAuthError,
    OAuthStateError,
    PortInUseError,
    ReauthRequired,
    ResourceAccessError,
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    StorePermissionError,
    StoreUnavailableError,
    StoreWriteError,
    TokenEndpointError,
    TokenRejectedError,
    UnchangedTokenError,
)
from .flow import OAuthClient
from .fs import atomic_write
from .loopback import (
    CallbackResult,
    CallbackServer,
    RequestInfo,
    get_auth_code,
    get_auth_code_async,
    open_url,
)
from .manager import TokenManager
from .models import ClientInfo, OAuthSession, Tokens
from .pkce import generate_pkce, generate_state, pkce_challenge
from .protocol import ServerMetadata
from .storage import FileStore, MemoryStore, RepairReport, TokenStore

__version__ = "0.1.0"

__all__ = [
    "CallbackResult",
    "CallbackServer",
    "RequestInfo",
    "CallbackCancelled",
    "CallbackError",
    "CallbackTimeout",
    "ClientInfo",
    "DiscoveryError",
    "FileStore",
    "InsecureHostError",
    "InsufficientScopeError",
    "InvalidClientError",
    "MemoryStore",
    "OAuthCallbackError",
    "OAuthClient",
    "OAuthError",
    "OAuthSession",
    "OAuthStateError",
    "PortInUseError",
    "ReauthRequired",
    "ResourceAccessError",
    "ServerMetadata",
    "RepairReport",
    "StoreCorruptError",
    "StoreError",
    "StoreLockTimeout",
    "StorePermissionError",
    "StoreUnavailableError",
    "StoreWriteError",
    "TokenEndpointError",
    "TokenRejectedError",
    "TokenManager",
    "TokenStore",
    "Tokens",
    "UnchangedTokenError",
    "__version__",
    "atomic_write",
    "generate_pkce",
    "generate_state",
    "get_auth_code",
    "get_auth_code_async",
    "open_url",
    "pkce_challenge",
]
