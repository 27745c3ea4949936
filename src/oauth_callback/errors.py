"""Exceptions raised by oauth-callback.

Every exception derives from :class:`OAuthCallbackError`. Messages name the
file, key, port or parameter involved and never contain a secret (tokens,
client secrets, authorization codes, PKCE verifiers, ``state`` values).

Hierarchy::

    OAuthCallbackError
    ├── StoreError                      storage layer (carries .path)
    │   ├── StoreCorruptError           file does not parse, no good backup
    │   │   └── StoreDecryptError       an encrypted record fails to authenticate (.key_source)
    │   ├── StoreWriteError             a write failed; old content intact (.errno)
    │   ├── StoreLockTimeout            lock not acquired in time (also TimeoutError)
    │   ├── StorePermissionError        permission denied on store/lock/dir
    │   ├── StoreUnavailableError       backend unreachable (keyring, Redis, ...)
    │   ├── StoreKeyError               encryption key missing or unusable (.key_source)
    │   │   ├── StoreWrongKeyError      record under another key id (.key_id)
    │   │   └── StoreEncryptedError     an encrypted record read/replaced without encryption (.key)
    │   └── MigrationError              records not copied by migrate() (.report)
    │       └── MigrationVerifyError    a record read back differs from the source
    ├── CallbackError                   loopback capture
    │   ├── PortInUseError              the port is taken (.port)
    │   ├── CallbackTimeout             no callback in time (also TimeoutError)
    │   ├── CallbackCancelled           cancelled by the caller
    │   ├── OAuthStateError             state mismatch (CSRF defence)
    │   └── InsecureHostError           a non-loopback host without opt-in
    ├── OAuthError                      provider said error=... (.error, .description, .uri)
    │   ├── ReauthRequired              grant is gone; run the login again
    │   └── InvalidClientError          provider rejected the client (invalid_client)
    ├── IssuerMismatchError             the response names another issuer (RFC 9207 mix-up)
    ├── DiscoveryError                  metadata missing or invalid
    ├── IdTokenError                    the OIDC ID Token failed validation (.claim)
    ├── AccountMismatchError            a login found another account under the key
    ├── EndpointError                   an endpoint unreachable / malformed reply (.status_code)
    │   ├── TokenEndpointError          the token endpoint (and device, revocation)
    │   └── RegistrationError           the registration endpoint (RFC 7591)
    ├── MissingCredentialsError         a machine login's secret variable or key file is missing
    └── ResourceAccessError             a resource server refused the token (.status, .challenge)
        ├── TokenRejectedError          401 again after one refresh and one retry
        │   └── UnchangedTokenError     the refresh answered the token just rejected
        └── InsufficientScopeError      403 insufficient_scope (.scope: what it needs)
"""

from __future__ import annotations

import os

from ._lazy import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Identity
    from .storage.migrate import MigrationReport

__all__ = [
    "AccountMismatchError",
    "CallbackCancelled",
    "CallbackError",
    "CallbackTimeout",
    "DiscoveryError",
    "EndpointError",
    "IdTokenError",
    "InsecureHostError",
    "InsufficientScopeError",
    "InvalidClientError",
    "IssuerMismatchError",
    "MigrationError",
    "MigrationVerifyError",
    "MissingCredentialsError",
    "OAuthCallbackError",
    "OAuthError",
    "OAuthStateError",
    "PortInUseError",
    "ReauthRequired",
    "RegistrationError",
    "ResourceAccessError",
    "StoreCorruptError",
    "StoreDecryptError",
    "StoreEncryptedError",
    "StoreError",
    "StoreKeyError",
    "StoreLockTimeout",
    "StorePermissionError",
    "StoreUnavailableError",
    "StoreWriteError",
    "StoreWrongKeyError",
    "TokenEndpointError",
    "TokenRejectedError",
    "UnchangedTokenError",
]


class OAuthCallbackError(Exception):
    """Base class of every exception raised by oauth-callback."""


# --------------------------------------------------------------------------- storage


class StoreError(OAuthCallbackError):
    """A token store operation failed. ``path`` names the file or resource."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path: str | None = os.fspath(path) if path is not None else None


class StoreCorruptError(StoreError):
    """The store does not parse and no good backup exists.

    Writes are refused until the file is repaired (``FileStore.repair()`` or
    ``oauth-callback doctor --repair``), so nothing else stored is lost.
    """


class _KeySourced(StoreError):
    """A store error that names where the encryption key comes from (``key_source``:
    ``env:NAME``, ``file:PATH``, ``keyring``; never the key itself)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        key_source: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.key_source = key_source


class StoreDecryptError(StoreCorruptError, _KeySourced):
    """An encrypted record does not decrypt with the store's key although the key id matches.

    The ciphertext was modified, or copied from another key name or section
    (the associated data binds it to both), or the record is in a format this
    version does not know. ``key_source`` names where the key came from.
    """


class StoreWriteError(StoreError):
    """Writing the store failed; the previous content is intact.

    ``errno`` is the OS error number when the failure came from the OS.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.errno = errno


class StoreLockTimeout(StoreError, TimeoutError):
    """The store's inter-process lock was not acquired within the timeout."""


class StorePermissionError(StoreError, PermissionError):
    """The OS denied access to the store, its directory or its lock file."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached or used (no keyring backend, Redis down, ...)."""


class StoreKeyError(_KeySourced):
    """The encryption key of an encrypted store is missing or unusable.

    ``key_source`` names where the key comes from (``env:NAME``, ``file:PATH``,
    ``keyring``), never the key itself: a missing variable or file, a key file
    readable by others or owned by someone else, or a value that is not the
    base64url form of 32 bytes.
    """


class StoreWrongKeyError(StoreKeyError):
    """A record was encrypted under another key than the store's.

    ``key_id`` is the id stored with the record, ``expected_key_id`` the id of
    the store's key. Writes of that record are refused too, so a wrong key can
    never overwrite what it cannot read.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        key_source: str | None = None,
        key_id: str | None = None,
        expected_key_id: str | None = None,
    ) -> None:
        super().__init__(message, path=path, key_source=key_source)
        self.key_id = key_id
        self.expected_key_id = expected_key_id


class StoreEncryptedError(StoreKeyError):
    """A record is encrypted at rest but the store was opened without encryption.

    Raised by reads (``get``, ``get_client``, ``get_session``) and by the
    read-modify-writes (``update``...) of that record, instead of handing out
    the placeholder an encrypted record carries where its secrets were
    (``"$encrypted"``), and by ``set``/``set_client``/``set_session`` over it,
    instead of replacing it with a plaintext record. Nothing is changed (the
    ``delete`` methods still remove it). ``key`` is the record's key,
    ``section`` its kind (``tokens``, ``clients``, ``sessions``), ``key_id``
    the id of the key it was encrypted under. Open the store with its key:
    ``?encryption=SOURCE`` on the store URL, or
    :class:`~oauth_callback.storage.encrypted.EncryptedStore`.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        key: str | None = None,
        section: str | None = None,
        key_id: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.key = key
        self.section = section
        self.key_id = key_id


class MigrationError(StoreError):
    """Some records could not be copied by :func:`~oauth_callback.storage.migrate`;
    ``report`` tells which (and what was done)."""

    def __init__(self, message: str, report: MigrationReport) -> None:
        super().__init__(message, path=report.target)
        self.report = report


class MigrationVerifyError(MigrationError):
    """A record read back from the target differs from (or is missing against) the source."""


# --------------------------------------------------------------------------- loopback


class CallbackError(OAuthCallbackError):
    """The loopback callback capture failed."""


class PortInUseError(CallbackError, OSError):
    """The requested loopback port is already in use."""

    def __init__(self, port: int, host: str) -> None:
        super().__init__(
            f"port {port} on {host} is already in use; pass port=0 to pick a free port "
            f"(and register a loopback redirect URI without a fixed port, RFC 8252 7.3)"
        )
        self.port = port
        self.host = host


class CallbackTimeout(CallbackError, TimeoutError):
    """No authorization callback arrived within the timeout."""


class CallbackCancelled(CallbackError):
    """The caller cancelled the wait for the authorization callback."""


class OAuthStateError(CallbackError):
    """The callback's ``state`` did not match the one sent (possible CSRF)."""


class InsecureHostError(CallbackError, ValueError):
    """A non-loopback bind address was requested without the explicit opt-in."""


# --------------------------------------------------------------------------- protocol


class OAuthError(OAuthCallbackError):
    """The authorization server answered with an OAuth error (RFC 6749 4.1.2.1, 5.2).

    ``error`` is the error code, ``description`` and ``uri`` the optional
    human-readable text and link the provider sent.
    """

    def __init__(
        self, error: str, description: str | None = None, uri: str | None = None
    ) -> None:
        self.error = error
        self.description = description
        self.uri = uri
        message = error
        if description:
            message += f": {description}"
        if uri:
            message += f" ({uri})"
        super().__init__(message)


class ReauthRequired(OAuthError):
    """The stored grant can no longer be used; run the interactive login again.

    ``error`` is the server's error code (``invalid_grant``) or
    ``login_required`` when the reason is local (no tokens, no refresh token,
    no stored client); ``message`` replaces the default text.
    """

    def __init__(
        self,
        key: str,
        error: str = "invalid_grant",
        description: str | None = None,
        uri: str | None = None,
        *,
        message: str | None = None,
    ) -> None:
        super().__init__(error, description, uri)
        self.key = key
        if message is None:
            message = f"login required for {key!r}: the authorization server answered {error}"
            if description:
                message += f" ({description})"
        self.args = (message,)


class DiscoveryError(OAuthCallbackError):
    """Authorization server metadata could not be fetched or is invalid."""


class IdTokenError(OAuthCallbackError):
    """The ID Token of an OpenID Connect login failed validation (OIDC Core 3.1.3.7).

    Its signature does not verify against the provider's JWKS, or ``iss``,
    ``aud``, ``azp``, ``exp``, ``iat`` or ``nonce`` is wrong. The login is
    refused and nothing is stored. ``claim`` names the claim (or ``"signature"``,
    ``"header"``) that failed; the message never quotes the token.
    """

    def __init__(self, message: str, *, claim: str) -> None:
        super().__init__(message)
        self.claim = claim


class AccountMismatchError(OAuthCallbackError):
    """A login authenticated another account than the one stored under the key.

    Both are accounts of the same issuer with different ``sub``; nothing was
    stored. ``key`` is the store key, ``stored`` and ``new`` the
    :class:`~oauth_callback.models.Identity` of each. Log in under another
    key, or pass ``replace_account=True`` to replace the stored one.
    """

    def __init__(self, key: str, stored: Identity, new: Identity) -> None:
        super().__init__(
            f"{key!r} holds the login of {stored.label!r}, but this login authenticated "
            f"{new.label!r}; nothing was stored"
        )
        self.key = key
        self.stored = stored
        self.new = new


class EndpointError(OAuthCallbackError):
    """An authorization server endpoint could not be reached or returned a malformed reply.

    ``status_code`` is the HTTP status (``None`` for a network failure);
    ``retry_after`` the seconds the server asked to wait (``Retry-After``).
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class TokenEndpointError(EndpointError):
    """The token endpoint (or the device authorization or revocation endpoint, which
    speak the same protocol) could not be reached or returned a malformed reply."""


class RegistrationError(EndpointError):
    """The registration endpoint (RFC 7591) could not be reached or returned a
    malformed reply (an RFC 7591 error answer is an :class:`OAuthError`)."""


class IssuerMismatchError(OAuthCallbackError):
    """The authorization response names another issuer than the one the login
    started with, or lacks the ``iss`` the server advertises (RFC 9207): a
    possible mix-up attack. Not a :class:`CallbackError`: the callback arrived
    fine, it is its origin that is wrong."""


# --------------------------------------------------------------------------- using the tokens


class InvalidClientError(OAuthError):
    """The authorization server rejected the client itself (``invalid_client``,
    RFC 6749 5.2): unknown client id, wrong secret, a private key it does not
    know, or an authentication method it does not accept. Logging in again does
    not help; the client configuration must change."""


class MissingCredentialsError(OAuthCallbackError):
    """The client secret or private key a stored client-credentials login needs
    is not available: the environment variable it is read from is not set, or
    the key file it names cannot be read. The message names the variable or the
    file, never a secret."""


class ResourceAccessError(OAuthCallbackError):
    """A resource server refused the access token.

    ``status`` is the HTTP status, ``challenge`` the parsed ``Bearer``
    ``WWW-Authenticate`` challenge (a :class:`oauth_callback.bearer.BearerChallenge`)
    or ``None``. Messages never contain the token.
    """

    def __init__(self, message: str, *, status: int, challenge: object | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.challenge = challenge


class TokenRejectedError(ResourceAccessError):
    """The resource server answered ``401`` although the token was refreshed once
    and the request retried once (the retry is never repeated: no 401 loop)."""


class UnchangedTokenError(TokenRejectedError):
    """The resource server rejected the token, and the refresh made for that
    answered the very same access token: retrying would loop."""


class InsufficientScopeError(ResourceAccessError):
    """``403`` with ``error="insufficient_scope"`` (RFC 6750 3.1). ``scope`` is the
    tuple of scopes the resource server says it needs (empty when it did not
    say): log in again asking for them (a step-up)."""

    def __init__(
        self, message: str, *, status: int = 403, challenge: object | None = None,
        scope: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, status=status, challenge=challenge)
        self.scope = scope
