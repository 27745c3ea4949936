"""The OAuth client: discovery, the loopback login, code exchange and refresh.

:class:`OAuthClient` is a thin network shell over :mod:`oauth_callback.protocol`
using ``httpx2``; every network method has an ``_async`` twin. ``login`` runs
the whole authorization code flow with PKCE on a loopback redirect URI and
saves the tokens *and* the client registration in a
:class:`~oauth_callback.storage.base.TokenStore`, so a later process can
refresh with only the store and the key (see :class:`oauth_callback.manager.TokenManager`).

Nothing secret (tokens, client secret, code, verifier, ``state``) is logged,
put in an exception message or shown in a ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import IO, Any, TypeVar, cast

import anyio.to_thread

from ._http import httpx2
from ._text import clip
from .browser import OpenBrowser, open_url, open_url_async
from .device import (
    DeviceAuthorization,
    DeviceLoginFlow,
    device_authorization_request,
    device_login_flow,
    device_token_request,
)
from .errors import (
    AccountMismatchError,
    CallbackCancelled,
    DiscoveryError,
    OAuthError,
    TokenEndpointError,
)
from .identity import Fetch, identify_flow, oidc_nonce, userinfo_flow
from .loopback import CallbackServer, LoopbackOptions, RequestInfo
from .models import ClientInfo, Identity, OAuthSession, Tokens
from .paste import PasteListener, judge_pasted
from .pkce import generate_pkce, generate_state
from .protocol import (
    AUTH_METHODS,
    Backoff,
    CallbackResult,
    RawResponse,
    ServerMetadata,
    TokenFlow,
    TokenRequest,
    authorization_code_request,
    build_authorization_url,
    check_callback,
    default_auth_method,
    discovery_flow,
    refresh_request,
    revocation_flow,
    revocation_request,
    token_flow,
)
from .storage.base import TokenStore

__all__ = ["DEFAULT_TIMEOUT", "OAuthClient"]

logger = logging.getLogger("oauth_callback.flow")

#: Default timeout in seconds of every HTTP request the client makes.
DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


# --------------------------------------------------------------------------- HTTP shells


def _raw(response: httpx2.Response) -> RawResponse:
    return RawResponse(
        response.status_code,
        {k.lower(): v for k, v in response.headers.items()},
        response.content,
    )


# Failures whose text describes only the connection ("[Errno 111] Connection
# refused", "timed out"). Others, protocol errors above all, may quote bytes the
# server sent, a token among them: only their type is shown.
_SAFE_DETAIL = (httpx2.ConnectError, httpx2.TimeoutException)


def _network_error(what: str, url: str, exc: Exception) -> str:
    detail = str(exc).strip() if isinstance(exc, _SAFE_DETAIL) else ""
    return f"could not reach the {what} {url}: {type(exc).__name__}" + (
        f" ({detail[:200]})" if detail else ""
    )


def _post_sync(http: httpx2.Client, request: TokenRequest) -> RawResponse | TokenEndpointError:
    try:
        response = http.post(request.url, content=request.body, headers=dict(request.headers))
    except httpx2.RequestError as exc:
        return TokenEndpointError(_network_error("token endpoint", request.url, exc))
    return _raw(response)


async def _post_async(
    http: httpx2.AsyncClient, request: TokenRequest
) -> RawResponse | TokenEndpointError:
    try:
        response = await http.post(
            request.url, content=request.body, headers=dict(request.headers)
        )
    except httpx2.RequestError as exc:
        return TokenEndpointError(_network_error("token endpoint", request.url, exc))
    return _raw(response)


def _fetch_sync(http: httpx2.Client, fetch: Fetch) -> RawResponse | DiscoveryError:
    try:
        return _raw(http.get(fetch.url, headers=dict(fetch.headers)))
    except httpx2.RequestError as exc:
        return DiscoveryError(_network_error("provider URL", fetch.url, exc))


async def _fetch_async(http: httpx2.AsyncClient, fetch: Fetch) -> RawResponse | DiscoveryError:
    try:
        return _raw(await http.get(fetch.url, headers=dict(fetch.headers)))
    except httpx2.RequestError as exc:
        return DiscoveryError(_network_error("provider URL", fetch.url, exc))


async def _drive_async(gen: Generator[S, Any, R], step: Callable[[S], Awaitable[Any]]) -> R:
    """Run a protocol generator, answering each yielded value with ``await step(value)``."""
    try:
        value = next(gen)
        while True:
            value = gen.send(await step(value))
    except StopIteration as stop:
        return cast(R, stop.value)


def _get_sync(http: httpx2.Client, url: str) -> RawResponse | DiscoveryError:
    try:
        return _raw(http.get(url, headers={"Accept": "application/json"}))
    except httpx2.RequestError as exc:
        return DiscoveryError(_network_error("metadata URL", url, exc))


async def _get_async(http: httpx2.AsyncClient, url: str) -> RawResponse | DiscoveryError:
    try:
        return _raw(await http.get(url, headers={"Accept": "application/json"}))
    except httpx2.RequestError as exc:
        return DiscoveryError(_network_error("metadata URL", url, exc))


def _finish(stop: StopIteration) -> Any:
    return stop.value


def _drive_sync(gen: Generator[S, Any, R], step: Callable[[S], Any]) -> R:
    """Run a protocol generator, answering each yielded value with ``step(value)``."""
    try:
        value = next(gen)
        while True:
            value = gen.send(step(value))
    except StopIteration as stop:
        return cast(R, _finish(stop))


def _token_step_sync(http: httpx2.Client) -> Callable[[TokenRequest | Backoff], Any]:
    def step(item: TokenRequest | Backoff) -> RawResponse | TokenEndpointError | None:
        if isinstance(item, Backoff):
            time.sleep(item.seconds)
            return None
        return _post_sync(http, item)

    return step


async def _drive_token_async(flow: TokenFlow, http: httpx2.AsyncClient) -> Tokens:
    item = next(flow)
    while True:
        reply: RawResponse | TokenEndpointError | None
        if isinstance(item, Backoff):
            await anyio.sleep(item.seconds)
            reply = None
        else:
            reply = await _post_async(http, item)
        try:
            item = flow.send(reply)
        except StopIteration as stop:
            return cast(Tokens, _finish(stop))


async def _discover_async(http: httpx2.AsyncClient, issuer: str) -> ServerMetadata:
    gen = discovery_flow(issuer)
    url = next(gen)
    while True:
        reply = await _get_async(http, url)
        try:
            url = gen.send(reply)
        except StopIteration as stop:
            return cast(ServerMetadata, _finish(stop))


# --------------------------------------------------------------------------- the client


class OAuthClient:
    """An OAuth 2.1 client of one authorization server.

    Give the endpoints, or an ``issuer`` (its metadata is then discovered on
    first use), or build it with :meth:`discover`. ``token_endpoint_auth_method``
    ``None`` means ``none`` without a secret and ``client_secret_basic`` with
    one. ``resource`` (RFC 8707) is sent in the authorization and token
    requests. ``http_client`` / ``async_http_client`` are used (never closed)
    when given; otherwise each call opens a short-lived client with ``timeout``.

    Raises :class:`ValueError` for an unknown auth method or a secret-based one
    without ``client_secret``.
    """

    def __init__(
        self,
        client_id: str,
        *,
        client_secret: str | None = None,
        scope: str | Sequence[str] | None = None,
        authorization_endpoint: str | None = None,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        token_endpoint_auth_method: str | None = None,
        resource: str | Sequence[str] | None = None,
        metadata: ServerMetadata | None = None,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        device_authorization_endpoint: str | None = None,
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        method = token_endpoint_auth_method or default_auth_method(client_secret)
        if method not in AUTH_METHODS:
            raise ValueError(
                f"unsupported token_endpoint_auth_method {method!r}; use one of {AUTH_METHODS}"
            )
        if method != "none" and not client_secret:
            raise ValueError(f"token_endpoint_auth_method {method!r} needs a client_secret")
        self.client_id = client_id
        self._client_secret = client_secret
        if scope is not None and not isinstance(scope, str):
            scope = " ".join(scope)
        self.scope: str | None = scope or None
        self.token_endpoint_auth_method = method
        if resource is None:
            resource = ()
        self.resource: tuple[str, ...] = (
            (resource,) if isinstance(resource, str) else tuple(resource)
        )
        self.metadata = metadata
        self.issuer = issuer if issuer is not None else (metadata.issuer if metadata else None)
        self.authorization_endpoint = authorization_endpoint or (
            metadata.authorization_endpoint if metadata else None
        )
        self.token_endpoint = token_endpoint or (metadata.token_endpoint if metadata else None)
        self._device_endpoint = device_authorization_endpoint
        self.timeout = timeout
        self._http = http_client
        self._async_http = async_http_client
        self._metadata_lock = threading.Lock()

    @property
    def client_secret(self) -> str | None:
        """The client secret (``None`` for a public client)."""
        return self._client_secret

    def __repr__(self) -> str:
        return (
            f"OAuthClient(client_id={self.client_id!r}, issuer={self.issuer!r}, "
            f"token_endpoint={self.token_endpoint!r}, "
            f"auth_method={self.token_endpoint_auth_method!r})"
        )

    # -- construction ---------------------------------------------------------

    @classmethod
    def discover(
        cls,
        issuer: str,
        client_id: str,
        *,
        http_client: httpx2.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> OAuthClient:
        """Fetch ``issuer``'s metadata (RFC 8414, then OIDC) and build a client.

        ``kwargs`` are the other constructor arguments. Raises
        :class:`DiscoveryError` when no metadata is found or it is invalid
        (e.g. it names another issuer).
        """
        with _sync_client(http_client, timeout) as http:
            metadata = _drive_sync(discovery_flow(issuer), lambda url: _get_sync(http, url))
        return cls(
            client_id, metadata=metadata, http_client=http_client, timeout=timeout, **kwargs
        )

    @classmethod
    async def discover_async(
        cls,
        issuer: str,
        client_id: str,
        *,
        async_http_client: httpx2.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> OAuthClient:
        """Async :meth:`discover`."""
        async with _async_client(async_http_client, timeout) as http:
            metadata = await _discover_async(http, issuer)
        return cls(
            client_id,
            metadata=metadata,
            async_http_client=async_http_client,
            timeout=timeout,
            **kwargs,
        )

    @classmethod
    def from_client_info(
        cls,
        info: ClientInfo,
        *,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> OAuthClient:
        """Rebuild the client a login saved with :meth:`client_info`.

        Without a stored ``token_endpoint`` the ``issuer``'s metadata is
        discovered on first use. Raises :class:`ValueError` as the constructor.
        """
        metadata = _stored_metadata(info)
        resource = info.extra.get("resource")
        if not (
            resource is None
            or isinstance(resource, str)
            or (isinstance(resource, list) and all(isinstance(r, str) for r in resource))
        ):
            resource = None
        return cls(
            info.client_id,
            client_secret=info.client_secret,
            scope=info.scope,
            authorization_endpoint=info.authorization_endpoint,
            token_endpoint=info.token_endpoint,
            issuer=info.issuer,
            token_endpoint_auth_method=info.token_endpoint_auth_method,
            resource=resource,
            metadata=metadata,
            http_client=http_client,
            async_http_client=async_http_client,
            timeout=timeout,
        )

    def client_info(self, redirect_uri: str | None = None) -> ClientInfo:
        """What :meth:`from_client_info` needs to rebuild this client later."""
        extra: dict[str, Any] = {}
        if self.resource:
            extra["resource"] = self.resource[0] if len(self.resource) == 1 else list(
                self.resource
            )
        extra.update(_metadata_extra(self.metadata))
        return ClientInfo(
            client_id=self.client_id,
            client_secret=self._client_secret,
            issuer=self.issuer,
            token_endpoint=self.token_endpoint,
            authorization_endpoint=self.authorization_endpoint,
            redirect_uri=redirect_uri,
            scope=self.scope,
            token_endpoint_auth_method=self.token_endpoint_auth_method,
            extra=extra,
        )

    # -- dynamic client registration (RFC 7591) ---------------------------------

    @classmethod
    def register(
        cls,
        issuer_or_metadata: str | ServerMetadata,
        *,
        client_name: str,
        redirect_uris: Sequence[str],
        scope: str | None = None,
        token_endpoint_auth_method: str = "none",
        extra_metadata: Mapping[str, Any] | None = None,
        http_client: httpx2.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> OAuthClient:
        """Register a new client (RFC 7591) and return it, ready for :meth:`login`.

        For a loopback login register ``http://127.0.0.1/callback`` or
        ``http://localhost/callback``: servers must accept any port on a
        loopback redirect URI (RFC 8252 7.3). Raises :class:`DiscoveryError`
        when the server has no registration endpoint, :class:`OAuthError` for
        an RFC 7591 error answer, :class:`TokenEndpointError` for a network
        failure or malformed answer.
        """
        with _sync_client(http_client, timeout) as http:
            metadata = (
                issuer_or_metadata
                if isinstance(issuer_or_metadata, ServerMetadata)
                else _drive_sync(
                    discovery_flow(issuer_or_metadata), lambda url: _get_sync(http, url)
                )
            )
            url, body = _registration_request(
                metadata, client_name, redirect_uris, scope, token_endpoint_auth_method,
                extra_metadata,
            )
            try:
                response = http.post(url, json=body, headers={"Accept": "application/json"})
            except httpx2.RequestError as exc:
                raise TokenEndpointError(
                    _network_error("registration endpoint", url, exc)
                ) from None
        return cls._registered(
            metadata, _raw(response), scope, http_client, None, timeout,
            _registration_secrets(body),
        )

    @classmethod
    async def register_async(
        cls,
        issuer_or_metadata: str | ServerMetadata,
        *,
        client_name: str,
        redirect_uris: Sequence[str],
        scope: str | None = None,
        token_endpoint_auth_method: str = "none",
        extra_metadata: Mapping[str, Any] | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> OAuthClient:
        """Async :meth:`register`."""
        async with _async_client(async_http_client, timeout) as http:
            metadata = (
                issuer_or_metadata
                if isinstance(issuer_or_metadata, ServerMetadata)
                else await _discover_async(http, issuer_or_metadata)
            )
            url, body = _registration_request(
                metadata, client_name, redirect_uris, scope, token_endpoint_auth_method,
                extra_metadata,
            )
            try:
                response = await http.post(url, json=body, headers={"Accept": "application/json"})
            except httpx2.RequestError as exc:
                raise TokenEndpointError(
                    _network_error("registration endpoint", url, exc)
                ) from None
        return cls._registered(
            metadata, _raw(response), scope, None, async_http_client, timeout,
            _registration_secrets(body),
        )

    @classmethod
    def _registered(
        cls,
        metadata: ServerMetadata,
        response: RawResponse,
        scope: str | None,
        http_client: httpx2.Client | None,
        async_http_client: httpx2.AsyncClient | None,
        timeout: float,
        secrets: Sequence[str] = (),
    ) -> OAuthClient:
        try:
            data = json.loads(response.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TokenEndpointError(
                f"registration endpoint answered HTTP {response.status} without a JSON object",
                status_code=response.status,
            )
        if response.status >= 400 or "error" in data:
            error = data.get("error")
            if isinstance(error, str) and error and response.status < 500:
                # The same redaction and control-character stripping as token errors.
                raise OAuthError(
                    clip(error, secrets) or "unknown_error",
                    clip(data.get("error_description"), secrets),
                    clip(data.get("error_uri"), secrets),
                )
            raise TokenEndpointError(
                f"registration endpoint answered HTTP {response.status}",
                status_code=response.status,
            )
        client_id = data.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise TokenEndpointError(
                "registration response has no 'client_id'", status_code=response.status
            )
        secret = data.get("client_secret")
        method = data.get("token_endpoint_auth_method")
        return cls(
            client_id,
            client_secret=secret if isinstance(secret, str) and secret else None,
            scope=scope,
            token_endpoint_auth_method=method if isinstance(method, str) else None,
            metadata=metadata,
            http_client=http_client,
            async_http_client=async_http_client,
            timeout=timeout,
        )

    # -- metadata on demand -------------------------------------------------------

    def _needs_metadata(self, *, authorize: bool) -> bool:
        missing = self.token_endpoint is None or (authorize and self.authorization_endpoint is None)
        if missing and self.issuer is None:
            raise ValueError(
                "OAuthClient needs an issuer or the "
                + ("authorization and token endpoints" if authorize else "token endpoint")
            )
        return missing

    def _adopt(self, metadata: ServerMetadata) -> None:
        with self._metadata_lock:
            self.metadata = metadata
            # The issuer discovery validated: what RFC 9207's ``iss`` must equal.
            self.issuer = metadata.issuer
            self.authorization_endpoint = (
                self.authorization_endpoint or metadata.authorization_endpoint
            )
            self.token_endpoint = self.token_endpoint or metadata.token_endpoint

    def _ensure_endpoints(self, *, authorize: bool = False) -> None:
        if self._needs_metadata(authorize=authorize):
            assert self.issuer is not None
            with _sync_client(self._http, self.timeout) as http:
                self._adopt(
                    _drive_sync(discovery_flow(self.issuer), lambda url: _get_sync(http, url))
                )

    async def _ensure_endpoints_async(self, *, authorize: bool = False) -> None:
        if self._needs_metadata(authorize=authorize):
            assert self.issuer is not None
            async with _async_client(self._async_http, self.timeout) as http:
                self._adopt(await _discover_async(http, self.issuer))

    @property
    def _iss_required(self) -> bool:
        return bool(self.metadata and self.metadata.authorization_response_iss_parameter_supported)

    # -- building blocks ------------------------------------------------------------

    def authorization_url(
        self,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        *,
        extra_params: Mapping[str, str] | None = None,
    ) -> str:
        """The authorization request URL (PKCE S256, ``state``, ``scope``, ``resource``).

        Discovers the metadata first when only an issuer is known.
        """
        self._ensure_endpoints(authorize=True)
        return self._authorization_url(redirect_uri, state, code_challenge, extra_params)

    def _authorization_url(
        self,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        extra_params: Mapping[str, str] | None,
    ) -> str:
        assert self.authorization_endpoint is not None
        return build_authorization_url(
            self.authorization_endpoint,
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            state=state,
            code_challenge=code_challenge,
            scope=self.scope,
            resource=self.resource or None,
            extra_params=extra_params,
        )

    def _code_request(self, code: str, redirect_uri: str, code_verifier: str) -> TokenRequest:
        assert self.token_endpoint is not None
        return authorization_code_request(
            self.token_endpoint,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            client_id=self.client_id,
            client_secret=self._client_secret,
            auth_method=self.token_endpoint_auth_method,
            resource=self.resource or None,
        )

    def _refresh_request(self, refresh_token: str, scope: str | None) -> TokenRequest:
        assert self.token_endpoint is not None
        return refresh_request(
            self.token_endpoint,
            refresh_token=refresh_token,
            client_id=self.client_id,
            client_secret=self._client_secret,
            auth_method=self.token_endpoint_auth_method,
            scope=scope,
            resource=self.resource or None,
        )

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> Tokens:
        """Exchange an authorization code for tokens (sent once: codes are single use).

        Raises :class:`OAuthError` (e.g. ``invalid_grant`` for a wrong PKCE
        verifier) or :class:`TokenEndpointError` (network, 5xx, malformed reply).
        """
        self._ensure_endpoints()
        flow = token_flow(self._code_request(code, redirect_uri, code_verifier))
        with _sync_client(self._http, self.timeout) as http:
            return _drive_sync(flow, _token_step_sync(http))

    async def exchange_code_async(
        self, code: str, redirect_uri: str, code_verifier: str
    ) -> Tokens:
        """Async :meth:`exchange_code`."""
        await self._ensure_endpoints_async()
        flow = token_flow(self._code_request(code, redirect_uri, code_verifier))
        async with _async_client(self._async_http, self.timeout) as http:
            return await _drive_token_async(flow, http)

    def refresh(
        self,
        refresh_token: str,
        *,
        previous: Tokens | None = None,
        scope: str | None = None,
        max_retries: int = 0,
        backoff: float = 0.2,
    ) -> Tokens:
        """Use ``refresh_token`` (RFC 6749 6) and return the new tokens.

        When the response omits ``refresh_token`` the one sent is kept (and the
        scope of ``previous``, if given). Network errors, 5xx and 429 are
        retried ``max_retries`` times with exponential backoff from ``backoff``
        seconds. Raises :class:`OAuthError` (``invalid_grant``: the grant is
        gone) or :class:`TokenEndpointError` once retries are exhausted.
        """
        self._ensure_endpoints()
        flow = self._refresh_flow(refresh_token, previous, scope, max_retries, backoff)
        with _sync_client(self._http, self.timeout) as http:
            return _keep_refresh_token(_drive_sync(flow, _token_step_sync(http)), refresh_token)

    async def refresh_async(
        self,
        refresh_token: str,
        *,
        previous: Tokens | None = None,
        scope: str | None = None,
        max_retries: int = 0,
        backoff: float = 0.2,
    ) -> Tokens:
        """Async :meth:`refresh`."""
        await self._ensure_endpoints_async()
        flow = self._refresh_flow(refresh_token, previous, scope, max_retries, backoff)
        async with _async_client(self._async_http, self.timeout) as http:
            return _keep_refresh_token(await _drive_token_async(flow, http), refresh_token)

    def _refresh_flow(
        self,
        refresh_token: str,
        previous: Tokens | None,
        scope: str | None,
        max_retries: int,
        backoff: float,
    ) -> TokenFlow:
        return token_flow(
            self._refresh_request(refresh_token, scope),
            max_retries=max_retries,
            backoff=backoff,
            previous=previous,
        )

    # -- the interactive login ---------------------------------------------------------

    def login(
        self,
        store: TokenStore,
        key: str,
        *,
        port: int = 0,
        host: str = "localhost",
        callback_path: str = "/callback",
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,
        cancel: threading.Event | None = None,
        on_request: Callable[[RequestInfo], object] | None = None,
        success_html: str | None = None,
        error_html: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        paste: IO[str] | None = None,
        replace_account: bool = False,
    ) -> Tokens:
        """Run the authorization code flow with PKCE on a loopback redirect URI.

        Starts a :class:`~oauth_callback.loopback.CallbackServer` (``port=0``: a free
        port), keeps the
        PKCE verifier and ``state`` in ``store`` as the session of ``key``
        while waiting (removed on every exit path), shows the URL with
        :func:`open_url`, checks ``state`` and ``iss`` (RFC 9207), exchanges
        the code, finds out who logged in (:func:`~oauth_callback.identity.identify_flow`:
        with ``openid`` in the scope a nonce is sent and the ID Token validated,
        else userinfo), then saves the client registration with that identity
        (``store.set_client``) and the tokens (``store.set``) under ``key`` and
        returns the tokens.

        With ``paste`` (e.g. ``sys.stdin``) the person may instead paste the
        redirect URL their browser ends on (over SSH, where the browser cannot
        reach this machine): whichever of the callback and a pasted URL comes
        first completes the login, through the same checks
        (:mod:`oauth_callback.paste`); a wrong paste is explained on stderr and
        asked again; end of input only ends the paste path.

        Raises :class:`CallbackTimeout`, :class:`CallbackCancelled` (``cancel``
        set), :class:`OAuthStateError` (state or issuer mismatch),
        :class:`OAuthError` (the provider refused, or the code exchange
        failed), :class:`TokenEndpointError`, :class:`PortInUseError`,
        :class:`IdTokenError` (a bad ID Token), :class:`AccountMismatchError`
        (``key`` holds another account of the same issuer and not
        ``replace_account``).
        On failure the tokens and client stored under ``key`` are left as they were.
        """
        self._ensure_endpoints(authorize=True)
        verifier, challenge = generate_pkce()
        state = generate_state()
        options = LoopbackOptions(host, port, callback_path, success_html, error_html, on_request)
        with options.server(state) as server:
            redirect_uri = server.redirect_uri
            nonce, params = _login_nonce(self.scope, self.metadata, extra_params)
            url = self._authorization_url(redirect_uri, state, challenge, params)
            store.set_session(key, _session(verifier, state, redirect_uri))
            try:
                logger.debug("waiting for the authorization callback on %s", redirect_uri)
                open_url(url, open_browser)
                listener = self._listen_for_paste(paste, server, state)
                try:
                    result = server.wait_for_callback(timeout, state, cancel)
                finally:
                    _stop_listening(listener)
                server.close()
                code = check_callback(
                    result, state, self.issuer, iss_required=self._iss_required
                )
                tokens = self.exchange_code(code, redirect_uri, verifier)
                identity = self.identify(tokens, nonce=nonce)
                self._save(store, key, tokens, redirect_uri, identity, replace_account)
            finally:
                store.delete_session(key)
        logger.info("login for %r succeeded", key)
        return tokens

    async def login_async(
        self,
        store: TokenStore,
        key: str,
        *,
        port: int = 0,
        host: str = "localhost",
        callback_path: str = "/callback",
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,
        on_request: Callable[[RequestInfo], object] | None = None,
        success_html: str | None = None,
        error_html: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        paste: IO[str] | None = None,
        replace_account: bool = False,
    ) -> Tokens:
        """Async :meth:`login` (asyncio or trio, via AnyIO). Cancel it by cancelling the task.

        ``open_browser`` is shown with :func:`~oauth_callback.browser.open_url_async`
        (the system browser and a plain callable run in a worker thread, an
        ``async`` callable is awaited). Store operations run in worker threads.
        """
        await self._ensure_endpoints_async(authorize=True)
        verifier, challenge = generate_pkce()
        state = generate_state()
        options = LoopbackOptions(host, port, callback_path, success_html, error_html, on_request)
        async with options.server(state) as server:
            redirect_uri = server.redirect_uri
            nonce, params = _login_nonce(self.scope, self.metadata, extra_params)
            url = self._authorization_url(redirect_uri, state, challenge, params)
            await store.set_session_async(key, _session(verifier, state, redirect_uri))
            try:
                await open_url_async(url, open_browser)
                listener = self._listen_for_paste(paste, server, state)
                try:
                    result = await server.wait_for_callback_async(timeout, state)
                finally:
                    _stop_listening(listener)
                server.close()
                code = check_callback(
                    result, state, self.issuer, iss_required=self._iss_required
                )
                tokens = await self.exchange_code_async(code, redirect_uri, verifier)
                identity = await self.identify_async(tokens, nonce=nonce)
                await anyio.to_thread.run_sync(
                    self._save, store, key, tokens, redirect_uri, identity, replace_account
                )
            finally:
                with anyio.CancelScope(shield=True):
                    await store.delete_session_async(key)
        logger.info("login for %r succeeded", key)
        return tokens

    def _listen_for_paste(
        self, paste: IO[str] | None, server: CallbackServer, state: str
    ) -> PasteListener | None:
        """Read pasted redirect URLs from ``paste``; a good one completes ``server``'s wait."""
        if paste is None:
            return None
        redirect_uri, issuer, iss_required = server.redirect_uri, self.issuer, self._iss_required

        def judge(line: str) -> CallbackResult | str | None:
            verdict = judge_pasted(line, redirect_uri, state, issuer, iss_required=iss_required)
            if isinstance(verdict, CallbackResult):
                server.deliver(verdict.params)
            return verdict

        return PasteListener(paste, judge).start()

    def _save(
        self,
        store: TokenStore,
        key: str,
        tokens: Tokens,
        redirect_uri: str | None,
        identity: Identity | None = None,
        replace_account: bool = False,
    ) -> None:
        if identity is not None and not replace_account:
            stored = store.get_client(key)
            if stored is not None and _other_account(stored.identity, identity):
                assert stored.identity is not None
                raise AccountMismatchError(key, stored.identity, identity)
        # Client first: tokens without the client that can refresh them would
        # force a new login; a client without new tokens is harmless.
        store.set_client(key, self.client_info(redirect_uri).replace(identity=identity))
        store.set(key, tokens)

    # -- the device authorization grant (RFC 8628) ------------------------------------

    @property
    def device_authorization_endpoint(self) -> str | None:
        """The device authorization endpoint: given, or from the discovered metadata."""
        if self._device_endpoint is not None:
            return self._device_endpoint
        return self.metadata.device_authorization_endpoint if self.metadata else None

    def _device_needs_metadata(self) -> bool:
        if self._device_endpoint is not None or self.metadata is not None:
            return self._needs_metadata(authorize=False)
        if self.issuer is None:
            raise ValueError(
                "the device flow needs an issuer or a device_authorization_endpoint"
            )
        return True

    def _device_flow(self) -> DeviceLoginFlow:
        endpoint = self.device_authorization_endpoint
        if endpoint is None:
            where = self.issuer or self.token_endpoint
            raise DiscoveryError(
                f"the authorization server {where!r} does not offer the device flow "
                "(no device_authorization_endpoint in its metadata); log in through the "
                "browser instead (over SSH: login --no-browser, then paste the redirect)"
            )
        assert self.token_endpoint is not None
        token_endpoint = self.token_endpoint
        client_id, secret = self.client_id, self._client_secret
        method, resource = self.token_endpoint_auth_method, self.resource or None
        request = device_authorization_request(
            endpoint, client_id=client_id, client_secret=secret, auth_method=method,
            scope=self.scope, resource=resource,
        )
        return device_login_flow(
            request,
            lambda grant: device_token_request(
                token_endpoint, device_code=grant.device_code, client_id=client_id,
                client_secret=secret, auth_method=method, resource=resource,
            ),
        )

    def login_device(
        self,
        store: TokenStore,
        key: str,
        *,
        on_code: Callable[[DeviceAuthorization], object] | None = None,
        cancel: threading.Event | None = None,
    ) -> Tokens:
        """Log in with the device authorization grant (RFC 8628) and store the tokens.

        Asks the device authorization endpoint (discovered, or given to the
        constructor) for a code, shows it with ``on_code`` (default: one line
        on stderr), polls the token endpoint as the rules of
        :mod:`oauth_callback.device` say, then saves the client registration
        and the tokens under ``key`` exactly like :meth:`login`, so a later
        process refreshes them with only the store and the key.

        Raises :class:`DiscoveryError` (no device endpoint),
        :class:`OAuthError` (``access_denied``, ``expired_token``, ...),
        :class:`TokenEndpointError` (network, 5xx), :class:`CallbackCancelled`
        soon after ``cancel`` is set; ``KeyboardInterrupt`` stops it too.
        Nothing is stored on failure.
        """
        if self._device_needs_metadata():
            self._discover_now()
        flow = self._device_flow()
        show = on_code if on_code is not None else _print_device_code
        with _sync_client(self._http, self.timeout) as http:

            def step(item: TokenRequest | Backoff | DeviceAuthorization) -> Any:
                if isinstance(item, DeviceAuthorization):
                    show(item)
                    return None
                if isinstance(item, Backoff):
                    if cancel is None:
                        time.sleep(item.seconds)
                    elif cancel.wait(item.seconds):
                        raise CallbackCancelled("the device login was cancelled")
                    return None
                return _post_sync(http, item)

            tokens = _drive_sync(flow, step)
        self._save(store, key, tokens, None)
        logger.info("device login for %r succeeded", key)
        return tokens

    async def login_device_async(
        self,
        store: TokenStore,
        key: str,
        *,
        on_code: Callable[[DeviceAuthorization], object] | None = None,
    ) -> Tokens:
        """Async :meth:`login_device` (asyncio or trio); cancel it by cancelling the task.

        ``on_code`` runs in the event loop thread and must not block.
        """
        if self._device_needs_metadata():
            await self._discover_now_async()
        flow = self._device_flow()
        show = on_code if on_code is not None else _print_device_code
        async with _async_client(self._async_http, self.timeout) as http:
            item = next(flow)
            while True:
                reply: RawResponse | TokenEndpointError | None = None
                if isinstance(item, DeviceAuthorization):
                    show(item)
                elif isinstance(item, Backoff):
                    await anyio.sleep(item.seconds)
                else:
                    reply = await _post_async(http, item)
                try:
                    item = flow.send(reply)
                except StopIteration as stop:
                    tokens = cast(Tokens, stop.value)
                    break
        await anyio.to_thread.run_sync(self._save, store, key, tokens, None)
        logger.info("device login for %r succeeded", key)
        return tokens

    def _discover_now(self) -> None:
        assert self.issuer is not None
        with _sync_client(self._http, self.timeout) as http:
            self._adopt(_drive_sync(discovery_flow(self.issuer), lambda url: _get_sync(http, url)))

    async def _discover_now_async(self) -> None:
        assert self.issuer is not None
        async with _async_client(self._async_http, self.timeout) as http:
            self._adopt(await _discover_async(http, self.issuer))

    # -- revocation (RFC 7009) --------------------------------------------------------

    @property
    def revocation_endpoint(self) -> str | None:
        """The provider's revocation endpoint (from its metadata), or ``None``."""
        return self.metadata.revocation_endpoint if self.metadata is not None else None

    def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        """Revoke ``token`` (a refresh or access token) at the provider (RFC 7009).

        The client authenticates as at the token endpoint. Revoking a refresh
        token ends its grant at servers that support it. Discovers the
        metadata first when it is not known. Raises :class:`DiscoveryError`
        when the provider advertises no ``revocation_endpoint``,
        :class:`OAuthError` for an error answer (``invalid_client``, ...),
        :class:`TokenEndpointError` for a network failure or 5xx.
        """
        if self.metadata is None and self.issuer is not None:
            self._discover_now()
        flow = revocation_flow(self._revocation_request(token, token_type_hint))
        with _sync_client(self._http, self.timeout) as http:
            _drive_sync(flow, _token_step_sync(http))

    async def revoke_async(self, token: str, *, token_type_hint: str | None = None) -> None:
        """Async :meth:`revoke`."""
        if self.metadata is None and self.issuer is not None:
            await self._discover_now_async()
        flow = revocation_flow(self._revocation_request(token, token_type_hint))
        async with _async_client(self._async_http, self.timeout) as http:
            await _drive_async(flow, lambda request: _post_async(http, request))

    def _revocation_request(self, token: str, token_type_hint: str | None) -> TokenRequest:
        endpoint = self.revocation_endpoint
        if endpoint is None:
            raise DiscoveryError(
                f"authorization server {self.issuer or self.token_endpoint!r} advertises no "
                "revocation_endpoint (RFC 7009): tokens cannot be revoked there"
            )
        return revocation_request(
            endpoint,
            token=token,
            token_type_hint=token_type_hint,
            client_id=self.client_id,
            client_secret=self._client_secret,
            auth_method=self.token_endpoint_auth_method,
        )

    # -- who logged in ----------------------------------------------------------------

    def identify(self, tokens: Tokens, *, nonce: str | None = None) -> Identity | None:
        """Who ``tokens`` belong to (:func:`~oauth_callback.identity.identify_flow`).

        ``nonce`` is the one sent in the authorization request of an OpenID
        Connect login (its ID Token is then required and validated). Raises
        :class:`IdTokenError`, or :class:`DiscoveryError` when the provider's
        keys cannot be fetched.
        """
        flow = identify_flow(tokens, client_id=self.client_id, metadata=self.metadata,
                             nonce=nonce)
        with _sync_client(self._http, self.timeout) as http:
            return _drive_sync(flow, lambda fetch: _fetch_sync(http, fetch))

    def userinfo(self, access_token: str) -> dict[str, Any]:
        """The provider's userinfo claims for ``access_token`` (OIDC Core 5.3).

        Discovers the metadata first when it is not known. Raises
        :class:`DiscoveryError` when the provider has no userinfo endpoint or
        cannot be reached, :class:`ResourceAccessError` when it refuses the token.
        """
        if self.metadata is None and self.issuer is not None:
            self._discover_now()
        flow = userinfo_flow(self._userinfo_endpoint(), access_token)
        with _sync_client(self._http, self.timeout) as http:
            return _drive_sync(flow, lambda fetch: _fetch_sync(http, fetch))

    async def userinfo_async(self, access_token: str) -> dict[str, Any]:
        """Async :meth:`userinfo`."""
        if self.metadata is None and self.issuer is not None:
            await self._discover_now_async()
        flow = userinfo_flow(self._userinfo_endpoint(), access_token)
        async with _async_client(self._async_http, self.timeout) as http:
            return await _drive_async(flow, lambda fetch: _fetch_async(http, fetch))

    def _userinfo_endpoint(self) -> str:
        endpoint = self.metadata.userinfo_endpoint if self.metadata is not None else None
        if endpoint is None:
            raise DiscoveryError(
                f"authorization server {self.issuer or self.token_endpoint!r} advertises no "
                "userinfo_endpoint"
            )
        return endpoint

    async def identify_async(self, tokens: Tokens, *, nonce: str | None = None) -> Identity | None:
        """Async :meth:`identify`."""
        flow = identify_flow(tokens, client_id=self.client_id, metadata=self.metadata,
                             nonce=nonce)
        async with _async_client(self._async_http, self.timeout) as http:
            return await _drive_async(flow, lambda fetch: _fetch_async(http, fetch))


def _stop_listening(listener: PasteListener | None) -> None:
    if listener is not None:
        listener.stop()


def _print_device_code(authorization: DeviceAuthorization) -> None:
    print(
        f"To sign in, open {authorization.verification_uri} and enter the code "
        f"{authorization.user_code}",
        file=sys.stderr,
        flush=True,
    )


# What a login keeps of the metadata, so a later process can revoke, validate an
# ID Token and check ``iss`` without discovering again (ClientInfo.extra names).
_METADATA_EXTRA = (
    ("revocationEndpoint", "revocation_endpoint"),
    ("userinfoEndpoint", "userinfo_endpoint"),
    ("jwksUri", "jwks_uri"),
)


def _metadata_extra(metadata: ServerMetadata | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    extra: dict[str, Any] = {
        name: getattr(metadata, attr)
        for name, attr in _METADATA_EXTRA
        if getattr(metadata, attr) is not None
    }
    if metadata.authorization_response_iss_parameter_supported:
        extra["issParameterSupported"] = True
    return extra


def _stored_metadata(info: ClientInfo) -> ServerMetadata | None:
    """The metadata a login kept with ``info`` (validated then), or ``None``."""
    if not (info.issuer and info.authorization_endpoint and info.token_endpoint):
        return None
    if not any(name in info.extra for name, _attr in _METADATA_EXTRA):
        return None
    urls: dict[str, str | None] = {}
    for name, attr in _METADATA_EXTRA:
        url = info.extra.get(name)
        if url is not None and not isinstance(url, str):
            return None
        urls[attr] = url
    return ServerMetadata(
        issuer=info.issuer,
        authorization_endpoint=info.authorization_endpoint,
        token_endpoint=info.token_endpoint,
        revocation_endpoint=urls["revocation_endpoint"],
        userinfo_endpoint=urls["userinfo_endpoint"],
        jwks_uri=urls["jwks_uri"],
        authorization_response_iss_parameter_supported=info.extra.get("issParameterSupported")
        is True,
    )


def _other_account(stored: Identity | None, new: Identity) -> bool:
    """Whether ``new`` is another account of the issuer ``stored`` belongs to."""
    if stored is None or stored.same_account(new):
        return False
    if stored.issuer is None or new.issuer is None:
        return True
    return stored.issuer.removesuffix("/") == new.issuer.removesuffix("/")


def _login_nonce(
    scope: str | None, metadata: ServerMetadata | None, extra_params: Mapping[str, str] | None
) -> tuple[str | None, Mapping[str, str] | None]:
    """The nonce of the authorization request (the caller's own, or a fresh one for an
    OpenID Connect login) and the extra parameters that carry it."""
    given = (extra_params or {}).get("nonce")
    if given:
        return given, extra_params
    nonce = oidc_nonce(scope, metadata)
    if nonce is None:
        return None, extra_params
    return nonce, {**(extra_params or {}), "nonce": nonce}


def _session(verifier: str, state: str, redirect_uri: str) -> OAuthSession:
    return OAuthSession(
        code_verifier=verifier,
        state=state,
        created_at=time.time(),
        extra={"redirectUri": redirect_uri},
    )


def _keep_refresh_token(tokens: Tokens, sent: str) -> Tokens:
    return tokens if tokens.refresh_token is not None else tokens.replace(refresh_token=sent)


def _registration_request(
    metadata: ServerMetadata,
    client_name: str,
    redirect_uris: Sequence[str],
    scope: str | None,
    auth_method: str,
    extra_metadata: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any]]:
    if metadata.registration_endpoint is None:
        raise DiscoveryError(
            f"authorization server {metadata.issuer!r} has no registration_endpoint "
            "(dynamic client registration unsupported)"
        )
    if auth_method not in AUTH_METHODS:
        raise ValueError(f"unsupported token_endpoint_auth_method {auth_method!r}")
    body: dict[str, Any] = {
        "client_name": client_name,
        "redirect_uris": list(redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method,
    }
    if scope:
        body["scope"] = scope
    body.update(extra_metadata or {})
    return metadata.registration_endpoint, body


# Registration metadata that is a credential (RFC 7591 2.3, 3): never echoed back.
_REGISTRATION_SECRET_FIELDS = ("software_statement", "client_secret", "client_assertion")


def _registration_secrets(body: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        value for name in _REGISTRATION_SECRET_FIELDS
        if isinstance(value := body.get(name), str)
    )


@contextlib.contextmanager
def _sync_client(given: httpx2.Client | None, timeout: float) -> Iterator[httpx2.Client]:
    if given is not None:
        yield given
        return
    with httpx2.Client(timeout=timeout) as http:
        yield http


@contextlib.asynccontextmanager
async def _async_client(
    given: httpx2.AsyncClient | None, timeout: float
) -> AsyncIterator[httpx2.AsyncClient]:
    if given is not None:
        yield given
        return
    async with httpx2.AsyncClient(timeout=timeout) as http:
        yield http
