"""The SDK's ``OAuthClientProvider`` with our loopback login, store and locks; machine auth."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpx2

from .._log import get_logger
from ..browser import OpenBrowser, open_url_async
from ..errors import OAuthError
from ..keys import resolve_key
from ..loopback import CallbackServer, LoopbackOptions
from ..models import ClientInfo, Tokens
from ..protocol import choose_auth_method
from ..resource import resource_metadata_flow
from ..storage.base import TokenStore, validate_key
from ._sdk_compat import (
    AnyUrl,
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthClientProvider,
    OAuthFlowError,
    check_own_names,
    extract_field_from_www_auth,
    hide_logged,
    registration_url,
)
from .storage import (
    _STALE_CLIENT_ERRORS,
    StoreTokenStorage,
    _client_from_record,
    _Configuration,
    _reserved,
    _to_oauth_token,
)

__all__ = [
    "ClientCredentialsAuth",
    "StoreOAuthClientProvider",
    "browser_auth",
    "client_credentials_auth",
    "identity_assertion_auth",
]

logger = get_logger("oauth_callback.mcp")
_MCP_PROTOCOL_VERSION_HEADER = "mcp-protocol-version"

class _HeldLock:
    """Hold a thread-affine lock from async code without blocking the event loop.

    A dedicated thread enters the lock's context manager, waits until told to
    leave and exits it, so acquire and release happen in the same thread. If
    the awaiting task is cancelled, the thread releases as soon as it acquires.
    """

    def __init__(
        self, factory: Callable[[], contextlib.AbstractContextManager[Any]], name: str
    ) -> None:
        self._factory = factory
        self._name = name
        self._ready = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            manager = self._factory()
            manager.__enter__()
        except BaseException as exc:  # reported to the awaiting task
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._release.wait()
        finally:
            manager.__exit__(None, None, None)

    async def __aenter__(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        try:
            await anyio.to_thread.run_sync(self._ready.wait, abandon_on_cancel=True)
        except BaseException:
            self._release.set()
            raise
        if self._error is not None:
            raise self._error

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._thread is not None
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._thread.join)


# --------------------------------------------------------------------------- flows

#: What a flow of ours yields: a request to send, or a sub-flow to run in place.
_Step = httpx2.Request | AsyncGenerator[Any, Any]


_Flow = AsyncGenerator[httpx2.Request, httpx2.Response]


async def _nested(flow: AsyncGenerator[_Step, Any]) -> _Flow:
    """Drive ``flow`` as an ``httpx2`` auth flow: the requests it yields are sent and
    their responses sent back; a generator it yields is a sub-flow, run to its end
    in place (what ``yield from`` does for plain generators). An exception ends
    the whole flow; every unfinished generator is closed."""
    stack: list[AsyncGenerator[_Step, Any]] = [flow]
    answer: httpx2.Response | None = None
    try:
        while stack:
            try:
                step = await stack[-1].asend(answer)
            except StopAsyncIteration:
                stack.pop()
                answer = None
                continue
            if isinstance(step, httpx2.Request):
                answer = yield step
            else:
                stack.append(step)
                answer = None
    finally:
        while stack:
            await stack.pop().aclose()


# --------------------------------------------------------------------------- provider


class _StaleClient(Exception):
    """The authorization server rejected the client registration we hold."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"the authorization server does not accept client {client_id!r}")
        self.client_id = client_id


hide_logged(_StaleClient)  # the re-registration we handle ourselves


def _bearer(request: httpx2.Request) -> str | None:
    value = request.headers.get("Authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:]
    return None


def _is_step_up(response: httpx2.Response) -> bool:
    return (
        response.status_code == 403
        and extract_field_from_www_auth(response, "error") == "insufficient_scope"
    )


async def _json_body(response: httpx2.Response) -> Any:
    """The JSON body of ``response`` (read first: an auth flow gets it unread), or ``None``,
    also for a body over :data:`~oauth_callback.driver.MAX_RESPONSE_BYTES`: nothing of it
    (a huge "rotated" secret) is adopted. (httpx reads every answer of an auth flow
    whole, so it is read, not streamed.)"""
    from ..driver import MAX_RESPONSE_BYTES

    try:
        await response.aread()
        return None if len(response.content) > MAX_RESPONSE_BYTES else response.json()
    except Exception:
        return None


async def _oauth_error_code(response: httpx2.Response) -> str | None:
    body = await _json_body(response)
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, str) else None


def _is_code_exchange(request: httpx2.Request) -> bool:
    if request.method != "POST":
        return False
    form = dict(parse_qsl(request.content.decode("utf-8", "replace")))
    return form.get("grant_type") == "authorization_code"


def _probe_url(authorization_endpoint: str, client_id: str, redirect_uri: str) -> str:
    """An authorization request that cannot mint a code: ``response_type=none``
    (OAuth 2.0 Multiple Response Types 4: nothing is issued), no PKCE, no state."""
    parts = urlsplit(authorization_endpoint)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("response_type", "none"), ("client_id", client_id), ("redirect_uri", redirect_uri)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _probe_finds_stale(response: httpx2.Response, redirect_uri: str) -> bool:
    """Whether the authorization endpoint's answer to :func:`_probe_url` rejects the
    client: an error page (``400``/``401``: RFC 6749 4.1.2.1, an invalid client id
    or redirect URI is never redirected), or an ``invalid_client`` error redirect
    to us. Any other answer (an error redirect for the response type, a login
    page) means the server knows the client and its redirect URI."""
    if response.status_code in (400, 401):
        return True
    location = response.headers.get("Location", "") if response.is_redirect else ""
    target = urlsplit(location)
    if target._replace(query="", fragment="").geturl() != redirect_uri:
        return False
    return dict(parse_qsl(target.query)).get("error") == "invalid_client"


def _loopback_port(uri: str, host: str, path: str) -> int | None:
    """The port of ``uri`` if it is a loopback redirect URI for ``host`` and ``path``."""
    parts = urlsplit(uri)
    hostname = (parts.hostname or "").lower()
    wanted = host.strip("[]").lower()
    if parts.scheme != "http" or hostname != wanted or parts.path != path:
        return None
    try:
        return parts.port
    except ValueError:
        return None


class StoreOAuthClientProvider(OAuthClientProvider):
    """The SDK's ``OAuthClientProvider`` with a loopback browser login and a shared store.

    Build it with :func:`browser_auth`. Use it as ``auth`` of the
    ``httpx2.AsyncClient`` given to ``mcp.client.streamable_http.streamable_http_client``.

    Over the SDK provider it adds: tokens and client registration persisted in
    ``store`` under ``key`` with an absolute expiry; a proactive refresh of a
    token expiring within ``refresh_margin`` seconds (also right after a
    restart); a refresh attempt when the server answers ``401`` to a token it
    issued; re-registration (once) when the authorization server rejects the
    stored client, found without an authorization request (RFC 7592's client
    configuration endpoint when the registration response named one, else the
    errors the stale client causes and, with ``check_registration``, one
    authorization request that cannot mint a code); and per-key locks so that
    concurrent processes sharing the store log in once and refresh once.

    Every name this subclass adds starts with ``_oc_`` (checked at import by
    :func:`~oauth_callback.mcp._sdk_compat.check_own_names`), so a later SDK
    attribute cannot collide with one of ours.
    """

    def __init__(
        self,
        server_url: str,
        client_metadata: OAuthClientMetadata,
        *,
        store: TokenStore,
        key: str,
        open_browser: OpenBrowser = True,
        host: str = "localhost",
        port: int = 0,
        callback_path: str = "/callback",
        timeout: float = 300.0,
        refresh_margin: float = 30.0,
        refresh_lock_timeout: float = 60.0,
        login_lock_timeout: float | None = None,
        client_info: OAuthClientInformationFull | None = None,
        client_metadata_url: str | None = None,
        success_html: str | None = None,
        error_html: str | None = None,
        check_registration: bool = True,
        token_endpoint_auth_method: str | None = None,
    ) -> None:
        self._oc_store = store
        self._oc_key = store.check_key(key)
        self._oc_storage = StoreTokenStorage(store, self._oc_key, server_url=server_url)
        super().__init__(
            server_url,
            client_metadata,
            self._oc_storage,
            redirect_handler=self._oc_redirect_handler,
            callback_handler=self._oc_callback_handler,
            client_metadata_url=client_metadata_url,
        )
        self._oc_open_browser = open_browser
        self._oc_loopback = LoopbackOptions(
            host, port, callback_path, success_html=success_html, error_html=error_html
        )
        self._oc_timeout = timeout
        self._oc_refresh_margin = refresh_margin
        self._oc_refresh_lock_timeout = refresh_lock_timeout
        self._oc_login_lock_timeout = (
            login_lock_timeout if login_lock_timeout is not None else timeout + 60.0
        )
        self._oc_check_registration = check_registration
        self._oc_fixed_client = client_info
        self._oc_explicit_auth_method = token_endpoint_auth_method
        self._oc_login_key = self._oc_key + "#login"
        self._oc_stored_client: OAuthClientInformationFull | None = None
        # The lifetime of the current access token (bounds the refresh margin).
        self._oc_lifetime: float | None = None
        self._oc_token_endpoint: str | None = None
        self._oc_server: CallbackServer | None = None
        self._oc_state: str | None = None

    def __repr__(self) -> str:
        return f"<StoreOAuthClientProvider {self.context.server_url} key={self._oc_key!r}>"

    # -- state -------------------------------------------------------------

    async def _initialize(self) -> None:
        """Load tokens and client from the store, with the token's true expiry."""
        tokens = await self._oc_store.get_async(self._oc_key)
        client = await self._oc_store.get_client_async(self._oc_key)
        self._oc_adopt(tokens, client)
        self._initialized = True

    def _oc_adopt(self, tokens: Tokens | None, client: ClientInfo | None) -> None:
        """Make ``tokens`` and ``client`` (as read from the store) the current ones."""
        oauth_token = None if tokens is None else _to_oauth_token(tokens)
        self.context.current_tokens = oauth_token
        # The absolute expiry, exactly: the SDK's is_token_valid() then sees an
        # expired token as expired (SDK issue 3250: it used to see it as fresh).
        self._oc_lifetime = None if tokens is None else tokens.lifetime
        self.context.token_expiry_time = (
            tokens.expires_at if tokens is not None and oauth_token is not None else None
        )
        if self._oc_fixed_client is not None:
            self.context.client_info = self._oc_fixed_client
        else:
            info = None if client is None else _client_from_record(client)
            self.context.client_info = info
            self._oc_stored_client = info
        self._oc_token_endpoint = None if client is None else client.token_endpoint

    def _oc_reusing_stored(self, info: OAuthClientInformationFull | None) -> bool:
        """Whether ``info`` is the dynamically registered client read from the store
        (not a pre-registered one, nor one registered in this flow)."""
        return info is not None and self._oc_fixed_client is None and info is self._oc_stored_client

    def _oc_fresh(self) -> bool:
        """True when the current access token needs no refresh yet
        (:meth:`Tokens.needs_refresh`, the decision ``TokenManager`` makes too)."""
        tokens = self.context.current_tokens
        if tokens is None or not tokens.access_token:
            return False
        current = Tokens(tokens.access_token, expires_at=self.context.token_expiry_time,
                         lifetime=self._oc_lifetime)
        return not current.needs_refresh(self._oc_refresh_margin)

    def _oc_usable(self, tokens: Tokens | None, rejected: str | None) -> bool:
        return (
            tokens is not None
            and tokens.access_token != rejected
            and not tokens.needs_refresh(self._oc_refresh_margin)
        )

    def _oc_lock(self, key: str, timeout: float, name: str) -> _HeldLock:
        return _HeldLock(lambda: self._oc_store.refresh_lock(key, timeout=timeout), name)

    async def _oc_forget_tokens(self, used: Tokens) -> None:
        """Delete the stored tokens if they are still ``used`` (compare-and-delete)."""

        def drop(current: Tokens | None) -> Tokens | None:
            if current is not None and current.access_token == used.access_token:
                return None
            return current

        await self._oc_store.update_async(self._oc_key, drop)

    async def _oc_forget_client(self, client_id: str) -> None:
        """Drop the client registration ``client_id`` (context and store)."""
        logger.info(
            "dropping client registration %r for %s; registering again", client_id, self._oc_key
        )

        def drop(current: ClientInfo | None) -> ClientInfo | None:
            if current is not None and current.client_id == client_id:
                return None
            return current

        await self._oc_store.update_client_async(self._oc_key, drop)
        if self.context.client_info is not None and self.context.client_info.client_id == client_id:
            self.context.client_info = None
        self._oc_stored_client = None
        self._oc_token_endpoint = None

    async def _oc_remember_endpoints(self) -> None:
        """Record the token/authorization endpoints with the client (refresh after restart)."""
        metadata = self.context.oauth_metadata
        info = self.context.client_info
        if metadata is None or info is None or self._oc_fixed_client is not None:
            return
        token_endpoint = str(metadata.token_endpoint)
        authorization_endpoint = str(metadata.authorization_endpoint)

        def add(current: ClientInfo | None) -> ClientInfo | None:
            if current is None or current.client_id != info.client_id:
                return current
            if (current.token_endpoint, current.authorization_endpoint) == (
                token_endpoint,
                authorization_endpoint,
            ):
                return current
            return current.replace(
                token_endpoint=token_endpoint, authorization_endpoint=authorization_endpoint
            )

        await self._oc_store.update_client_async(self._oc_key, add)
        self._oc_token_endpoint = token_endpoint

    async def _refresh_token(self) -> httpx2.Request:
        request = await super()._refresh_token()
        endpoint = self._oc_token_endpoint
        if self.context.oauth_metadata is None and endpoint and str(request.url) != endpoint:
            # After a restart nothing is discovered yet; the SDK would guess
            # <origin>/token. Use the endpoint recorded at login instead.
            skip = ("host", "content-length")
            headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
            request = httpx2.Request("POST", endpoint, headers=headers, content=request.content)
        return request

    # -- the flow ------------------------------------------------------------

    def _auth_flow(self, request: httpx2.Request) -> _Flow:
        return _nested(self._oc_flow(request))

    async def _oc_flow(self, request: httpx2.Request) -> AsyncGenerator[_Step, Any]:
        async with self.context.lock:
            if not self._initialized:
                await self._initialize()
            self.context.protocol_version = request.headers.get(_MCP_PROTOCOL_VERSION_HEADER)
            stale = not self._oc_fresh() and self.context.can_refresh_token()

        # 1. A stored token that expired (e.g. while the process was not running)
        #    is refreshed before the request, not after a 401.
        if stale:
            yield self._oc_refresh_flow(None, [])
        if self.context.current_tokens is not None and self.context.is_token_valid():
            self._add_auth_header(request)

        response: httpx2.Response = yield request
        if response.status_code != 401 and not _is_step_up(response):
            return
        sent = _bearer(request)

        # 2. The token was rejected: newer tokens may be in the store (another
        #    process refreshed), or the refresh token may still work.
        if response.status_code == 401 and sent is not None:
            refreshed: list[bool] = []
            yield self._oc_refresh_flow(sent, refreshed)
            if refreshed and refreshed[0] and self.context.current_tokens is not None:
                self._add_auth_header(request)
                response = yield request
                if response.status_code != 401 and not _is_step_up(response):
                    return
                sent = _bearer(request)

        # 3. Authorize in the browser, once for all processes sharing the store.
        yield self._oc_login_flow(request, response, sent)

    async def _oc_refresh_flow(
        self, rejected: str | None, result: list[bool]
    ) -> AsyncGenerator[_Step, Any]:
        """Under the key's refresh lock: adopt newer stored tokens, or refresh.

        ``rejected`` is the access token the server refused (``None``: none was).
        Appends ``True`` to ``result`` when a usable token is current afterwards.
        """
        async with self._oc_lock(
            self._oc_key, self._oc_refresh_lock_timeout, "oauth-callback-refresh"
        ):
            tokens = await self._oc_store.get_async(self._oc_key)
            client = await self._oc_store.get_client_async(self._oc_key)
            if self._oc_usable(tokens, rejected):
                self._oc_adopt(tokens, client)  # another process (or task) got there first
                result.append(self.context.current_tokens is not None)
                return
            if (
                tokens is None
                or tokens.refresh_token is None
                or (client is None and self._oc_fixed_client is None)
            ):
                self.context.clear_tokens()
                result.append(False)
                return
            self._oc_adopt(tokens, client)
            if not self.context.can_refresh_token():
                self.context.clear_tokens()
                result.append(False)
                return
            # Space for the successor first (StoreWriteError, nothing sent, if none).
            async with _reserved(self._oc_store, self._oc_key):
                response = yield await self._refresh_token()
                result.append(await self._oc_finish_refresh(response, tokens))

    async def _oc_finish_refresh(self, response: httpx2.Response, used: Tokens) -> bool:
        if response.status_code == 200:
            ok = await self._handle_refresh_response(response)
            current = self.context.current_tokens
            self._oc_lifetime = None if current is None or current.expires_in is None else float(
                current.expires_in
            )
            return ok
        error = await _oauth_error_code(response)
        logger.info(
            "token refresh for %s failed: HTTP %s %s",
            self._oc_key, response.status_code, error or "",
        )
        info = self.context.client_info
        if error in _STALE_CLIENT_ERRORS and info is not None and self._oc_fixed_client is None:
            await self._oc_forget_client(info.client_id)
            await self._oc_forget_tokens(used)
        elif error == "invalid_grant":
            await self._oc_forget_tokens(used)
        self.context.clear_tokens()
        return False

    async def _oc_login_flow(
        self, request: httpx2.Request, response: httpx2.Response, sent: str | None
    ) -> AsyncGenerator[_Step, Any]:
        async with self._oc_lock(
            self._oc_login_key, self._oc_login_lock_timeout, "oauth-callback-login"
        ):
            # Whoever held the lock before us may have logged in: use their tokens.
            tokens = await self._oc_store.get_async(self._oc_key)
            client = await self._oc_store.get_client_async(self._oc_key)
            if (tokens is not None and tokens.access_token != sent and tokens.refresh_token
                    and not self._oc_usable(tokens, sent) and not _is_step_up(response)):
                # Their tokens are already near expiry (short-lived tokens, a slow
                # waiter): refresh them rather than open the browser a second time.
                yield self._oc_refresh_flow(sent, [])
                tokens = await self._oc_store.get_async(self._oc_key)
                client = await self._oc_store.get_client_async(self._oc_key)
            if self._oc_usable(tokens, sent):
                self._oc_adopt(tokens, client)
                if self.context.current_tokens is not None:
                    self._add_auth_header(request)
                    response = yield request
                    if response.status_code != 401 and not _is_step_up(response):
                        return
                    tokens = None
            step_up = _is_step_up(response)
            if step_up:
                if self._oc_fixed_client is None:
                    self.context.client_info = (
                        None if client is None else _client_from_record(client)
                    )
                    self._oc_stored_client = self.context.client_info
            else:
                self._oc_adopt(None, client)  # latest registration, no tokens
                request.headers.pop("Authorization", None)

            # A stale client found from the error it causes is dropped and the flow
            # retried once, registering again, with a new loopback server (the first
            # one took the error callback).
            for attempt in range(2):
                async with self._oc_callback_server() as server:
                    redirect_uri = server.redirect_uri
                    self.context.client_metadata.redirect_uris = [AnyUrl(redirect_uri)]
                    info = self.context.client_info
                    if (
                        info is not None
                        and self._oc_fixed_client is None
                        and info.redirect_uris
                        and redirect_uri not in {str(uri) for uri in info.redirect_uris}
                    ):
                        logger.info(
                            "client %r is not registered for %s; registering again",
                            info.client_id,
                            redirect_uri,
                        )
                        self.context.client_info = None
                    # A step-up re-authorizes a client that just worked: nothing to check.
                    if not step_up and client is not None and self._oc_reusing_stored(
                        self.context.client_info
                    ):
                        yield self._oc_check_stored_client(client, redirect_uri)
                    flow = OAuthClientProvider._auth_flow(self, request)
                    try:
                        outgoing = await flow.__anext__()
                        if outgoing is request:  # we already have its answer
                            outgoing = await flow.asend(response)
                        while True:
                            answer = yield outgoing
                            await self._oc_observe(outgoing, answer)
                            outgoing = await flow.asend(answer)
                    except StopAsyncIteration:
                        break
                    except _StaleClient as exc:
                        if attempt:
                            raise OAuthFlowError(str(exc)) from None
                        await self._oc_forget_client(exc.client_id)
                    finally:
                        await flow.aclose()
            await self._oc_remember_endpoints()

    async def _oc_observe(self, request: httpx2.Request, response: httpx2.Response) -> None:
        """Look at an answer before the SDK's flow gets it: keep the RFC 7592 fields of
        a registration response (the SDK's model drops them); raise
        :class:`_StaleClient` when the token endpoint answers ``invalid_client`` to
        the code exchange of the stored client."""
        if request.method == "POST" and response.status_code in (200, 201) and (
            str(request.url) == registration_url(self.context)
        ):
            body = await _json_body(response)
            self._oc_storage.expect_configuration(
                _Configuration.parse(body, origin=str(request.url)))
        elif (
            response.status_code in (400, 401)
            and _is_code_exchange(request)
            and await _oauth_error_code(response) == "invalid_client"
        ):
            info = self.context.client_info
            if info is not None and self._oc_reusing_stored(info):
                raise _StaleClient(info.client_id)

    async def _oc_check_stored_client(
        self, client: ClientInfo, redirect_uri: str
    ) -> AsyncGenerator[_Step, Any]:
        """Before a browser login with a stored, dynamically registered ``client``:
        is it still registered? Drop it (the flow registers again) when not.

        With RFC 7592 (the registration response named ``registration_client_uri``
        and ``registration_access_token``) a ``GET`` of the client configuration
        endpoint answers: ``200`` valid, ``401``/``403``/``404`` stale (RFC 7592
        2.1: the server may have deleted the client). Without it, and only with
        ``check_registration``, one authorization request that cannot mint a code
        (:func:`_probe_url`) for servers that show an error page for an unknown
        client instead of redirecting (RFC 6749 4.1.2.1); without either, a stale
        client is found from the error it causes (an error redirect, or
        ``invalid_client`` at the token endpoint).
        """
        configuration = _Configuration.of(client)
        if configuration is not None:
            headers = {"Authorization": f"Bearer {configuration.access_token}",
                       "Accept": "application/json"}
            response = yield httpx2.Request("GET", configuration.uri, headers=headers)
            if response.status_code in (401, 403, 404):
                await self._oc_forget_client(client.client_id)
            elif response.status_code == 200:
                await self._oc_update_configuration(client, await _json_body(response))
            return
        if not self._oc_check_registration or client.authorization_endpoint is None:
            return
        probe = _probe_url(client.authorization_endpoint, client.client_id, redirect_uri)
        response = yield httpx2.Request("GET", probe)
        if _probe_finds_stale(response, redirect_uri):
            await self._oc_forget_client(client.client_id)

    async def _oc_update_configuration(self, client: ClientInfo, body: Any) -> None:
        """Adopt what an RFC 7592 read rotated: a new registration access token (or
        URI) and a new client secret (RFC 7592 3: the client must use them)."""
        if not isinstance(body, Mapping) or body.get("client_id", client.client_id) \
                != client.client_id:
            return  # not this client's registration: nothing in it is adopted
        current = _Configuration.of(client)
        fresh = _Configuration.parse(body, client.client_id,
                                     origin=None if current is None else current.uri)
        secret = body.get("client_secret")
        secret = secret if isinstance(secret, str) and secret else None

        def update(current: ClientInfo | None) -> ClientInfo | None:
            if current is None or current.client_id != client.client_id:
                return current
            updated = current
            if fresh is not None and fresh != _Configuration.of(current):
                updated = fresh.stored_with(updated)
            if secret is not None and secret != current.client_secret:
                updated = updated.replace(client_secret=secret)
            return updated

        await self._oc_store.update_client_async(self._oc_key, update)
        info = self.context.client_info
        if secret is not None and info is not None and info.client_secret != secret:
            info = info.model_copy(update={"client_secret": secret})
            self.context.client_info = self._oc_stored_client = info

    # -- loopback ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _oc_callback_server(self) -> AsyncIterator[CallbackServer]:
        loopback = self._oc_loopback
        ports = [loopback.port]
        info = self.context.client_info
        if loopback.port == 0 and self._oc_fixed_client is None and info is not None:
            # Reuse the port the stored client was registered with, so the
            # registration stays valid on servers that compare ports exactly.
            for uri in info.redirect_uris or []:
                previous = _loopback_port(str(uri), loopback.host, loopback.callback_path)
                if previous:
                    ports.insert(0, previous)
                    break
        server: CallbackServer | None = None
        for index, port in enumerate(ports):
            server = loopback.server(port=port)
            try:
                server.start()
            except OSError:  # PortInUseError included: fall back to the next choice
                if index == len(ports) - 1:
                    raise
                continue
            break
        assert server is not None
        self._oc_server = server
        try:
            yield server
        finally:
            self._oc_server = None
            self._oc_state = None
            server.close()

    def _oc_choose_fixed_auth_method(self) -> None:
        """Fit a pre-registered client's token endpoint authentication to the server.

        Called once the authorization server's metadata is known: Basic unless
        ``token_endpoint_auth_methods_supported`` lists only ``client_secret_post``
        (:func:`~oauth_callback.protocol.choose_auth_method`, RFC 6749 2.3.1); an
        explicit ``token_endpoint_auth_method`` always wins.
        """
        fixed = self._oc_fixed_client
        metadata = self.context.oauth_metadata
        if fixed is None or metadata is None or self._oc_explicit_auth_method is not None:
            return
        method = choose_auth_method(
            client_secret=fixed.client_secret,
            supported=metadata.token_endpoint_auth_methods_supported,
        )
        if method != fixed.token_endpoint_auth_method:
            fixed = fixed.model_copy(update={"token_endpoint_auth_method": method})
            self._oc_fixed_client = fixed
            self.context.client_info = fixed

    async def _oc_redirect_handler(self, authorization_url: str) -> None:
        self._oc_state = dict(parse_qsl(urlsplit(authorization_url).query)).get("state")
        if self._oc_server is not None and self._oc_state:
            self._oc_server.expect_state(self._oc_state)  # forged callbacks are ignored from now on
        self._oc_choose_fixed_auth_method()
        await open_url_async(authorization_url, self._oc_open_browser)

    async def _oc_callback_handler(self) -> AuthorizationCodeResult:
        server = self._oc_server
        if server is None:
            raise OAuthFlowError("no loopback callback server is running")
        try:
            result = await server.wait_for_callback_async(self._oc_timeout, self._oc_state)
        except OAuthError as exc:
            info = self.context.client_info
            if exc.error in _STALE_CLIENT_ERRORS and info is not None and self._oc_reusing_stored(
                info
            ):
                raise _StaleClient(info.client_id) from exc
            raise
        if not result.code:
            raise OAuthFlowError("the authorization callback carries no code")
        return AuthorizationCodeResult(code=result.code, state=result.state, iss=result.iss)


# --------------------------------------------------------------------------- factory


check_own_names(StoreOAuthClientProvider)


def browser_auth(
    server_url: str,
    *,
    store: TokenStore | None = None,
    key: str | None = None,
    scope: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_name: str = "oauth-callback",
    port: int = 0,
    host: str = "localhost",
    callback_path: str = "/callback",
    open_browser: OpenBrowser = True,
    timeout: float = 300.0,
    refresh_margin: float = 30.0,
    client_metadata_url: str | None = None,
    success_html: str | None = None,
    error_html: str | None = None,
    token_endpoint_auth_method: str | None = None,
    check_registration: bool = True,
) -> StoreOAuthClientProvider:
    """OAuth for an MCP server at ``server_url``, logging in through the browser.

    Returns an ``httpx2.Auth`` (the SDK's ``OAuthClientProvider``) for the
    ``httpx2.AsyncClient`` of ``streamable_http_client``. On the first ``401``
    it discovers the authorization server, registers a client dynamically
    (unless ``client_id`` is given), opens the authorization URL (PKCE, a
    loopback redirect on ``host``/``port``, ``port=0``: a free one) and captures
    the code with :class:`~oauth_callback.loopback.CallbackServer`.

    Tokens and the registration go to ``store`` (default: :class:`FileStore`
    at its default path, ``~/.mcp/tokens.json``) under ``key`` (default: the
    one key scheme's key of ``server_url``, :func:`~oauth_callback.keys.default_key`,
    the key ``oauth-callback login SERVER_URL`` uses too, or the key an earlier
    version wrote for it: :func:`~oauth_callback.keys.resolve_key` reads the
    store once, here, to tell). ``open_browser``: ``True`` opens
    the system browser (or prints the URL when there is none), ``False`` prints
    it, a callable is given the URL (a plain function runs in a worker thread,
    an ``async`` one is awaited). ``timeout`` bounds the wait for the callback;
    a token expiring within ``refresh_margin`` seconds is refreshed first.

    A pre-registered confidential client (``client_id`` and ``client_secret``)
    authenticates at the token endpoint with ``client_secret_basic`` (RFC 6749
    2.3.1: every server supports it) unless the server's metadata lists only
    ``client_secret_post``; ``token_endpoint_auth_method`` forces one
    (``client_secret_basic``, ``client_secret_post`` or ``none``).

    A stored, dynamically registered client the server no longer knows is
    registered again, once, before the browser opens: found through RFC 7592's
    client configuration endpoint when the registration response named one;
    else (``check_registration``, the default) by one authorization request
    with ``response_type=none``, which mints no code, for servers that show an
    error page to an unknown client; else from the error the stale client
    causes (an error redirect, ``invalid_client`` from the token endpoint).
    """
    if store is None:
        from ..storage.file import FileStore

        store = FileStore()
    if key is None:
        key = resolve_key(store, server_url)
    uri_host = f"[{host.strip('[]')}]" if ":" in host else host
    placeholder = f"http://{uri_host}{f':{port}' if port else ''}{callback_path}"
    client_metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(placeholder)],  # the real port is set at login
        client_name=client_name,
        scope=scope,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    client_info = None
    if client_id is not None:
        client_info = OAuthClientInformationFull(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method=choose_auth_method(
                client_secret=client_secret, explicit=token_endpoint_auth_method
            ),
            scope=scope,
        )
    return StoreOAuthClientProvider(
        server_url,
        client_metadata,
        store=store,
        key=key,
        open_browser=open_browser,
        host=host,
        port=port,
        callback_path=callback_path,
        timeout=timeout,
        refresh_margin=refresh_margin,
        client_info=client_info,
        client_metadata_url=client_metadata_url,
        success_html=success_html,
        error_html=error_html,
        token_endpoint_auth_method=token_endpoint_auth_method,
        check_registration=check_registration,
    )


# --------------------------------------------------------------------------- machine to machine


class ClientCredentialsAuth(httpx2.Auth):
    """An ``httpx2.Auth`` for an MCP server, with tokens from the client-credentials grant.

    Build it with :func:`client_credentials_auth`. On first use it discovers
    the authorization server from the MCP server's protected-resource
    metadata (RFC 9728; the ``resource_metadata`` of a ``401`` challenge
    when the well-known URLs have none), then its metadata (RFC 8414 / OIDC),
    obtains a token with the client-credentials grant unless ``store`` already
    holds a usable one under ``key``, and from then on sends it through
    :meth:`TokenManager.httpx_auth() <oauth_callback.manager.TokenManager.httpx_auth>`:
    renewed before it expires, **once across processes** sharing the store
    (the refresh lock of the key), and one renewal and one retry when the
    server answers ``401``.
    """

    requires_response_body = True

    def __init__(
        self,
        server_url: str,
        *,
        client_id: str,
        client_secret: str | None,
        private_key: str | None,
        signing_algorithm: str,
        scope: str | None,
        store: TokenStore,
        key: str,
        token_endpoint_auth_method: str | None,
        timeout: float,
    ) -> None:
        if client_secret is None and private_key is None:
            raise ValueError("client_credentials_auth needs client_secret or private_key")
        self.server_url = server_url
        self.store = store
        self.key = validate_key(key, reserved=store.reserved_keys)
        self._client_id = client_id
        # The OAuthClient arguments (the auth method is chosen from the metadata).
        self._client_options: dict[str, Any] = {
            "client_secret": client_secret,
            "private_key": private_key,
            "signing_algorithm": signing_algorithm,
            "scope": scope,
            "token_endpoint_auth_method": token_endpoint_auth_method,
        }
        self._timeout = timeout
        self._inner: httpx2.Auth | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<ClientCredentialsAuth {self.server_url} key={self.key!r}>"

    async def _discover(self, challenge: str | None) -> tuple[str, str]:
        """(authorization server issuer, resource) from protected-resource metadata
        (:func:`~oauth_callback.resource.resource_metadata_flow`: a document for another
        resource is refused, RFC 9728 3.3), the issuer https (http only on loopback)."""
        from ..driver import run_async
        from ..effects import HttpGet, translated
        from ..errors import DiscoveryError
        from ..protocol import _is_loopback_host

        found = await run_async(
            translated(resource_metadata_flow(self.server_url, named=challenge),
                       lambda url: HttpGet(url, what="protected resource metadata URL")),
            timeout=self._timeout,
        )
        if found is None:
            raise OAuthError(
                "invalid_resource",
                f"no protected-resource metadata (RFC 9728) found for {self.server_url}",
            )
        issuer = found.authorization_servers[0]
        parts = urlsplit(issuer)
        if not (parts.scheme == "https" and parts.hostname) and not (
            parts.scheme == "http" and _is_loopback_host(parts.hostname)
        ):
            raise DiscoveryError(f"the authorization server of {self.server_url} must be "
                                 f"an https URL (http only on loopback), got {issuer!r}")
        return issuer, found.resource

    async def _manager_auth(self, challenge: str | None) -> httpx2.Auth:
        from ..flow import OAuthClient
        from ..manager import TokenManager

        async with self._lock:
            if self._inner is not None:
                return self._inner
            issuer, resource = await self._discover(challenge)
            client = await OAuthClient.discover_async(
                issuer, self._client_id, timeout=self._timeout, resource=resource,
                **self._client_options,
            )
            manager = TokenManager(self.store, self.key, client)
            stored = await self.store.get_async(self.key)
            if stored is None or manager.needs_refresh(stored):
                # Under the key's refresh lock, so processes starting at once ask once.
                async with _HeldLock(
                    lambda: self.store.refresh_lock(self.key, timeout=60.0),
                    "oauth-callback-client-credentials",
                ):
                    stored = await self.store.get_async(self.key)
                    if stored is None or manager.needs_refresh(stored):
                        await client.client_credentials_async(store=self.store, key=self.key)
            self._inner = manager.httpx_auth()
            return self._inner

    def async_auth_flow(self, request: httpx2.Request) -> _Flow:
        return _nested(self._flow(request))

    async def _flow(self, request: httpx2.Request) -> AsyncGenerator[_Step, Any]:
        challenge = None
        if self._inner is None and not await self._has_tokens():
            # Let the server name its metadata (a 401 with resource_metadata).
            response: httpx2.Response = yield request
            if response.status_code != 401:
                return
            await response.aread()
            challenge = extract_field_from_www_auth(response, "resource_metadata")
        inner = await self._manager_auth(challenge)
        yield inner.async_auth_flow(request)

    async def _has_tokens(self) -> bool:
        return await self.store.get_async(self.key) is not None


def client_credentials_auth(
    server_url: str,
    *,
    client_id: str,
    client_secret: str | None = None,
    private_key: str | None = None,
    signing_algorithm: str = "ES256",
    scope: str | None = None,
    store: TokenStore | None = None,
    key: str | None = None,
    token_endpoint_auth_method: str | None = None,
    timeout: float = 30.0,
) -> ClientCredentialsAuth:
    """OAuth for an MCP server, machine to machine: the client-credentials grant (RFC 6749 4.4).

    The client authenticates with ``client_secret`` (``client_secret_basic``
    unless the server lists only ``client_secret_post``) or, when
    ``private_key`` (a PEM string) is given, with a ``private_key_jwt``
    assertion (RFC 7523) signed with ``signing_algorithm`` (``ES256``,
    ``ES384``, ``RS256``, ``PS256``); ``token_endpoint_auth_method`` forces a
    method. Tokens go to ``store`` (default: :class:`FileStore` at its default
    path) under ``key`` (default: as for :func:`browser_auth`) and are
    renewed once across processes sharing the store. Neither the secret nor
    the key is written to the store. Raises :class:`ValueError` without a
    secret or a key; the first request raises
    :class:`~oauth_callback.errors.InvalidClientError` when the server rejects
    the client.
    """
    if store is None:
        from ..storage.file import FileStore

        store = FileStore()
    return ClientCredentialsAuth(
        server_url,
        client_id=client_id,
        client_secret=client_secret,
        private_key=private_key,
        signing_algorithm=signing_algorithm,
        scope=scope,
        store=store,
        key=key if key is not None else resolve_key(store, server_url),
        token_endpoint_auth_method=token_endpoint_auth_method,
        timeout=timeout,
    )


def identity_assertion_auth(
    server_url: str,
    *,
    client_id: str,
    client_secret: str,
    issuer: str,
    assertion_provider: Callable[[str, str], Awaitable[str]],
    scope: str | None = None,
    store: TokenStore | None = None,
    key: str | None = None,
    token_endpoint_auth_method: str = "client_secret_basic",
) -> httpx2.Auth:
    """Enterprise-managed authorization (SEP-990, cross-app access), tokens in our stores.

    The ``mcp`` SDK's ``IdentityAssertionOAuthProvider`` (the RFC 7523
    jwt-bearer grant with an Identity Assertion JWT from your identity
    provider, which ``assertion_provider(audience, resource)`` obtains) with
    its tokens kept in ``store`` under ``key`` (defaults as for
    :func:`browser_auth`) through :class:`StoreTokenStorage`, so they survive a
    restart. ``issuer`` is the MCP authorization server, as configuration (it
    is never discovered from the resource server). Unlike :func:`browser_auth`
    and :func:`client_credentials_auth`, renewals are coordinated within one
    provider object only, not across processes.
    """
    from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider

    if store is None:
        from ..storage.file import FileStore

        store = FileStore()
    key = validate_key(key if key is not None else resolve_key(store, server_url),
                       reserved=store.reserved_keys)
    if token_endpoint_auth_method not in ("client_secret_basic", "client_secret_post"):
        raise ValueError(
            "token_endpoint_auth_method must be client_secret_basic or client_secret_post"
        )
    return IdentityAssertionOAuthProvider(
        server_url=server_url,
        storage=StoreTokenStorage(store, key, server_url=server_url),
        client_id=client_id,
        client_secret=client_secret,
        issuer=issuer,
        assertion_provider=assertion_provider,
        scope=scope,
        token_endpoint_auth_method=token_endpoint_auth_method,  # type: ignore[arg-type]
    )
