"""OAuth for MCP clients: the ``mcp`` SDK's HTTP transports, backed by our token stores.

A package: :mod:`.storage` (the SDK's ``TokenStorage`` on our stores),
:mod:`.provider` (the provider, machine auth), :mod:`._sdk_compat` (every touch
of SDK internals, checked at import). Needs the ``mcp`` extra
(``pip install 'oauth-callback[mcp]'``).

* :class:`StoreTokenStorage` implements the SDK's ``TokenStorage`` protocol on any
  :class:`~oauth_callback.storage.TokenStore`. It persists the **absolute** expiry
  (``Tokens.expires_at``) and hands the SDK the lifetime *remaining now*, so a token
  loaded after a restart is never taken for a fresh one.
* :func:`browser_auth` returns a :class:`StoreOAuthClientProvider`: the SDK's
  ``OAuthClientProvider`` (an ``httpx2.Auth``) wired to the loopback
  :class:`~oauth_callback.loopback.CallbackServer`, which adds

  - proactive refresh of a stored token that expired while the process was not
    running (before the first request, not after a ``401``);
  - recovery from a stale client registration (server forgot the client):
    the registration is dropped and the client registers again, once;
  - multi-process safety: logins and refreshes of one key run under per-key
    locks of the store (inter-process for ``FileStore``), and each process
    re-reads the store after taking a lock, so two processes never both open a
    browser nor both spend a rotating refresh token.

Nothing here blocks the event loop: store calls use the ``_async`` twins and
lock waits run in worker threads (each held lock is acquired and released by
one dedicated thread, as the file locks are thread-affine). The one exception:
the factories (:func:`browser_auth` and its siblings) called without ``key``
read the store once, synchronously, to find the key
(:func:`~oauth_callback.keys.resolve_key`: the one key scheme's, or the one an
earlier version wrote), as cheap as one ``get``; pass ``key=`` to skip it.
"""

from __future__ import annotations

from .provider import (
    ClientCredentialsAuth,
    StoreOAuthClientProvider,
    browser_auth,
    client_credentials_auth,
    identity_assertion_auth,
)
from .storage import StoreTokenStorage, default_key

__all__ = [
    "ClientCredentialsAuth",
    "StoreOAuthClientProvider",
    "StoreTokenStorage",
    "browser_auth",
    "client_credentials_auth",
    "default_key",
    "identity_assertion_auth",
]
