"""The MCP SDK's ``TokenStorage`` on our stores, and the key of an MCP server."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from .._log import get_logger
from ..keys import default_key  # the one key scheme, re-exported (public name)
from ..models import ClientInfo, Tokens, fingerprint
from ..storage.base import TokenStore
from ._sdk_compat import (
    OAuthClientInformationFull,
    OAuthToken,
    ValidationError,
)

__all__ = ["StoreTokenStorage", "default_key"]

logger = get_logger("oauth_callback.mcp")

# ClientInfo.extra key naming the MCP server a registration was made for.
_SERVER_URL_FIELD = "mcpServerUrl"
# OAuthClientInformationFull fields that ClientInfo models directly, under the same name
# (the two times are floats there, ints in the SDK's model).
_MAPPED_CLIENT_FIELDS = (
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "issuer",
    "scope",
    "token_endpoint_auth_method",
)
_TIME_FIELDS = frozenset({"client_id_issued_at", "client_secret_expires_at"})
# Token endpoint errors meaning "this client registration is not (or no longer) valid".
_STALE_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# ClientInfo.extra keys of the RFC 7592 client configuration endpoint and its bearer token.
_CONFIGURATION_URI_FIELD = "registrationClientUri"
_CONFIGURATION_TOKEN_FIELD = "registrationAccessToken"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, repr=False)
class _Configuration:
    """Where and how to read a client's registration (RFC 7592): the
    ``registration_client_uri`` and its bearer ``registration_access_token``
    (a secret: its ``repr`` shows a fingerprint)."""

    client_id: str
    uri: str
    access_token: str

    def __repr__(self) -> str:
        return (
            f"_Configuration(client_id={self.client_id!r}, uri={self.uri!r}, "
            f"access_token={fingerprint(self.access_token)})"
        )

    @classmethod
    def parse(
        cls, data: Any, client_id: str | None = None, *, origin: str | None = None
    ) -> _Configuration | None:
        """From a registration (or configuration) response body, ``None`` without
        the two fields, or with a URI the token may not be sent to: only over
        ``https``, or ``http`` to a loopback host (RFC 7592 requires TLS), and
        only on the origin of ``origin`` when given (the URL that answered: the
        token never goes to another host)."""
        if not isinstance(data, Mapping):
            return None
        uri, token = data.get("registration_client_uri"), data.get("registration_access_token")
        client_id = data.get("client_id", client_id)
        if not (isinstance(uri, str) and isinstance(token, str) and token
                and isinstance(client_id, str) and client_id):
            return None
        parts = urlsplit(uri)
        if not (
            parts.scheme == "https"
            or (parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS)
        ):
            return None
        if origin is not None and _origin(uri) != _origin(origin):
            return None
        return cls(client_id, uri, token)

    @classmethod
    def of(cls, client: ClientInfo) -> _Configuration | None:
        """The configuration endpoint stored with ``client``, if any."""
        return cls.parse(
            {
                "registration_client_uri": client.extra.get(_CONFIGURATION_URI_FIELD),
                "registration_access_token": client.extra.get(_CONFIGURATION_TOKEN_FIELD),
            },
            client.client_id,
        )

    def stored_with(self, client: ClientInfo) -> ClientInfo:
        """``client`` (the same ``client_id``) with this configuration endpoint in its extra."""
        extra = {
            **client.extra,
            _CONFIGURATION_URI_FIELD: self.uri,
            _CONFIGURATION_TOKEN_FIELD: self.access_token,
        }
        return client.replace(extra=extra)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of ``url``, the port ``None`` when the scheme's default."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), None if port == {
        "http": 80, "https": 443}.get(scheme) else port


# --------------------------------------------------------------------------- conversions


def _to_oauth_token(tokens: Tokens, *, now: float | None = None) -> OAuthToken | None:
    """``tokens`` as the SDK's ``OAuthToken``, ``expires_in`` = lifetime remaining now (>= 0)."""
    expires_in: int | None = None
    if tokens.expires_at is not None:
        remaining = tokens.expires_at - (time.time() if now is None else now)
        expires_in = max(0, int(remaining))  # rounds down: never claims more than is left
    try:
        return OAuthToken(
            access_token=tokens.access_token,
            token_type=tokens.token_type,  # type: ignore[arg-type]  # validated below
            expires_in=expires_in,
            scope=tokens.scope,
            refresh_token=tokens.refresh_token,
        )
    except ValidationError:
        logger.warning("stored token of type %r is not usable by the MCP SDK", tokens.token_type)
        return None


def _from_oauth_token(token: OAuthToken, *, now: float | None = None) -> Tokens:
    expires_at = None
    if token.expires_in is not None:
        expires_at = (time.time() if now is None else now) + token.expires_in
    return Tokens(
        access_token=token.access_token,
        refresh_token=token.refresh_token,
        expires_at=expires_at,
        scope=token.scope,
        token_type=token.token_type,
        lifetime=None if token.expires_in is None else float(token.expires_in),
    )


def _client_to_record(info: OAuthClientInformationFull, server_url: str | None) -> ClientInfo:
    data = info.model_dump(mode="json", exclude_none=True)
    extra: dict[str, Any] = {k: v for k, v in data.items() if k not in _MAPPED_CLIENT_FIELDS}
    if server_url is not None:
        extra[_SERVER_URL_FIELD] = server_url
    redirect_uris = data.get("redirect_uris") or []
    mapped = {name: getattr(info, name) for name in _MAPPED_CLIENT_FIELDS}
    return ClientInfo(
        **mapped, redirect_uri=redirect_uris[0] if redirect_uris else None, extra=extra
    )


def _client_from_record(client: ClientInfo) -> OAuthClientInformationFull | None:
    ours = (_SERVER_URL_FIELD, _CONFIGURATION_URI_FIELD, _CONFIGURATION_TOKEN_FIELD)
    data: dict[str, Any] = {k: v for k, v in client.extra.items() if k not in ours}
    for name in _MAPPED_CLIENT_FIELDS:
        value = getattr(client, name)
        if value is not None:
            data[name] = int(value) if name in _TIME_FIELDS else value
    if "redirect_uris" not in data and client.redirect_uri:
        data["redirect_uris"] = [client.redirect_uri]
    try:
        return OAuthClientInformationFull.model_validate(data)
    except ValidationError:
        logger.warning("stored client registration %r is not usable; ignoring it", client.client_id)
        return None


# --------------------------------------------------------------------------- storage


class StoreTokenStorage:
    """The MCP SDK's ``TokenStorage`` on a :class:`TokenStore`, under one ``key``.

    Tokens are kept with an absolute expiry: ``set_tokens`` turns the relative
    ``expires_in`` into ``expires_at``; ``get_tokens`` returns an ``OAuthToken``
    whose ``expires_in`` is what remains *now* (``0`` once expired), so a reload
    never treats an expired token as fresh. The client registration is kept per
    key too, with the issuer it was registered with and ``server_url`` (as
    ``mcpServerUrl`` in :attr:`ClientInfo.extra`), and the RFC 7592 client
    configuration endpoint the registration response named, if the provider
    saw that response (:meth:`expect_configuration`). Every store call runs in
    a worker thread (the ``_async`` twins).
    """

    def __init__(self, store: TokenStore, key: str, *, server_url: str | None = None) -> None:
        self.store = store
        self.key = store.check_key(key)
        self.server_url = server_url
        self._configuration: _Configuration | None = None

    def __repr__(self) -> str:
        return f"StoreTokenStorage({self.store!r}, {self.key!r})"

    async def get_tokens(self) -> OAuthToken | None:
        """The stored tokens, ``expires_in`` being the lifetime left now."""
        tokens = await self.store.get_async(self.key)
        return None if tokens is None else _to_oauth_token(tokens)

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Store ``tokens``, converting ``expires_in`` to an absolute expiry."""
        await self.store.set_async(self.key, _from_oauth_token(tokens))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The stored client registration, or ``None`` (also when it does not parse)."""
        client = await self.store.get_client_async(self.key)
        return None if client is None else _client_from_record(client)

    def expect_configuration(self, configuration: _Configuration | None) -> None:
        """Keep ``configuration`` with the registration of its client stored next
        (what the SDK's model of a registration response drops)."""
        self._configuration = configuration

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Store the client registration (with its issuer, the server URL and its
        client configuration endpoint, when :meth:`expect_configuration` named one)."""
        record = _client_to_record(client_info, self.server_url)
        configuration, self._configuration = self._configuration, None
        if configuration is not None and configuration.client_id == record.client_id:
            record = configuration.stored_with(record)
        await self.store.set_client_async(self.key, record)


# --------------------------------------------------------------------------- locks


@contextlib.asynccontextmanager
async def _reserved(store: TokenStore, key: str) -> AsyncIterator[None]:
    """``store.reserve_write(key)`` entered and left in worker threads (it allocates)."""
    reservation = store.reserve_write(key)
    await anyio.to_thread.run_sync(reservation.__enter__)
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(reservation.__exit__, None, None, None)


