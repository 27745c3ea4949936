"""The OAuth client: discovery, registration, the loopback and device logins, refresh.

:class:`OAuthClient` writes each operation once, as a *flow* (a generator of
:mod:`effects <oauth_callback.effects>`, built on the pure
:mod:`oauth_callback.protocol` and :mod:`oauth_callback.device`), and hands it
to one of the two drivers of :mod:`oauth_callback.driver`: every public method
and its ``_async`` twin are two-line shells over the same flow. ``login`` runs
the whole authorization code flow with PKCE on a loopback redirect URI and
saves the tokens *and* the client registration in a
:class:`~oauth_callback.storage.base.TokenStore`, so a later process can
refresh with only the store and the key (see :class:`oauth_callback.manager.TokenManager`).

Nothing secret (tokens, client secret, code, verifier, ``state``) is logged,
put in an exception message or shown in a ``repr``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ._http import httpx2
from ._log import get_logger
from .assertion import PrivateKeyJWT
from .browser import OpenBrowser
from .device import (
    DeviceAuthorization,
    DeviceLoginFlow,
    device_authorization_request,
    device_login_flow,
    device_token_request,
)
from .driver import metadata_flow, run, run_async
from .effects import (
    CloseCallback,
    DeleteSession,
    Flow,
    HttpGet,
    LoadClient,
    OpenURL,
    PostJSON,
    SaveLogin,
    SaveSession,
    Show,
    StartCallback,
    WaitCallback,
    ensure,
    translated,
)
from .errors import (
    AccountMismatchError,
    DiscoveryError,
    MissingCredentialsError,
    RegistrationError,
)
from .identity import Fetch, identify_flow, oidc_nonce, userinfo_flow
from .loopback import LoopbackOptions, RequestInfo
from .models import (
    GRANT_TYPE_FIELD,
    KEY_ALGORITHM_FIELD,
    KEY_FILE_FIELD,
    KEY_ID_FIELD,
    SECRET_ENV_FIELD,
    ClientInfo,
    Identity,
    OAuthSession,
    Tokens,
)
from .paste import judge_pasted
from .pkce import generate_pkce, generate_state
from .protocol import (
    AUTH_METHODS,
    AuthMethod,
    CallbackResult,
    ClientAuthentication,
    RawResponse,
    ServerMetadata,
    TokenRequest,
    _error_answer,
    _json_object,
    authorization_code_request,
    build_authorization_url,
    check_callback,
    choose_auth_method,
    client_credentials_request,
    refresh_request,
    revocation_flow,
    revocation_request,
    token_flow,
)

if TYPE_CHECKING:
    from .storage.base import TokenStore

__all__ = ["DEFAULT_TIMEOUT", "OAuthClient"]

logger = get_logger("oauth_callback.flow")

#: Default timeout in seconds of every HTTP request the client makes.
DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")


class OAuthClient:
    """An OAuth 2.1 client of one authorization server.

    Give the endpoints, or an ``issuer`` (its metadata is then discovered on
    first use), or build it with :meth:`discover`. ``resource`` (RFC 8707) is
    sent in the authorization and token requests. ``http_client`` /
    ``async_http_client`` are used (never closed) when given; otherwise each
    call opens a short-lived client with ``timeout``.

    Client authentication at the token endpoint
    (:func:`~oauth_callback.protocol.choose_auth_method`): an explicit
    ``token_endpoint_auth_method`` wins; else ``private_key_jwt`` when
    ``private_key`` is given (a PEM string, or a
    :class:`~oauth_callback.assertion.PrivateKeyJWT`; ``signing_algorithm`` and
    ``key_id`` for the former), ``none`` without a secret, and with a secret
    ``client_secret_basic`` unless the server's metadata lists only
    ``client_secret_post`` (decided once the metadata is known).

    Raises :class:`ValueError` for an unknown auth method, or one without what
    it needs (a secret, a private key).
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
        private_key: str | bytes | PrivateKeyJWT | None = None,
        signing_algorithm: str = "ES256",
        key_id: str | None = None,
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        self._signer: PrivateKeyJWT | None = None
        if private_key is not None:
            self._signer = (
                private_key if isinstance(private_key, PrivateKeyJWT)
                else PrivateKeyJWT(private_key, algorithm=signing_algorithm, kid=key_id)
            )
        self._explicit_auth_method = token_endpoint_auth_method
        choose_auth_method(  # validates now; the metadata may refine it later
            client_secret=client_secret, private_key=self._signer is not None,
            explicit=token_endpoint_auth_method,
        )
        self.client_id = client_id
        self._client_secret = client_secret
        if scope is not None and not isinstance(scope, str):
            scope = " ".join(scope)
        self.scope: str | None = scope or None
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

    @property
    def private_key(self) -> PrivateKeyJWT | None:
        """The ``private_key_jwt`` signer, if any (its ``repr`` shows no key)."""
        return self._signer

    @property
    def token_endpoint_auth_method(self) -> AuthMethod:
        """How this client authenticates at the token endpoint (see the class docstring)."""
        metadata = self.metadata
        return choose_auth_method(
            client_secret=self._client_secret,
            private_key=self._signer is not None,
            supported=metadata.token_endpoint_auth_methods_supported if metadata else None,
            explicit=self._explicit_auth_method,
        )

    def _authentication(self, *, assertion: bool = True) -> ClientAuthentication:
        """How this client authenticates a request to the token endpoint (with a
        fresh ``private_key_jwt`` assertion unless ``assertion`` is false)."""
        return {
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "auth_method": self.token_endpoint_auth_method,
            "client_assertion": self._client_assertion() if assertion else None,
        }

    def _client_assertion(self) -> str | None:
        """A fresh ``private_key_jwt`` assertion for one token request (``None``
        for other methods). ``aud`` is the authorization server's issuer
        identifier when it is known (what RFC 7523bis requires, and what the MCP
        authorization spec's servers check), else the token endpoint (RFC 7523 3)."""
        if self._signer is None or self.token_endpoint_auth_method != "private_key_jwt":
            return None
        assert self.token_endpoint is not None
        audience = self.issuer or self.token_endpoint
        return self._signer.assertion(client_id=self.client_id, audience=audience)

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
        metadata = run(metadata_flow(issuer), http=http_client, timeout=timeout)
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
        metadata = await run_async(metadata_flow(issuer), http=async_http_client, timeout=timeout)
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
        """Rebuild the client a login saved with :meth:`client_info` (or
        :meth:`machine_client_info`).

        Without a stored ``token_endpoint`` the ``issuer``'s metadata is
        discovered on first use. A secret that was not stored is read from the
        environment variable the login recorded, a private key from the file
        it recorded. Raises :class:`MissingCredentialsError` naming the
        variable or file when that fails, :class:`ValueError` as the constructor.
        """
        metadata = _stored_metadata(info)
        resource = info.extra.get("resource")
        if not (
            resource is None
            or isinstance(resource, str)
            or (isinstance(resource, list) and all(isinstance(r, str) for r in resource))
        ):
            resource = None
        secret, private_key = _stored_credentials(info)
        return cls(
            info.client_id,
            client_secret=secret,
            private_key=private_key,
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
        an RFC 7591 error answer, :class:`RegistrationError` for a network
        failure or malformed answer.
        """
        flow = _registration_flow(issuer_or_metadata, client_name, redirect_uris, scope,
                                  token_endpoint_auth_method, extra_metadata)
        metadata, answer = run(flow, http=http_client, timeout=timeout)
        return cls(**answer, scope=scope, metadata=metadata, http_client=http_client,
                   timeout=timeout)

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
        flow = _registration_flow(issuer_or_metadata, client_name, redirect_uris, scope,
                                  token_endpoint_auth_method, extra_metadata)
        metadata, answer = await run_async(flow, http=async_http_client, timeout=timeout)
        return cls(**answer, scope=scope, metadata=metadata,
                   async_http_client=async_http_client, timeout=timeout)

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

    def _endpoints_flow(self, *, authorize: bool = False) -> Flow[None]:
        """Discover the metadata first when an endpoint the flow needs is unknown."""
        if self._needs_metadata(authorize=authorize):
            assert self.issuer is not None
            self._adopt((yield from metadata_flow(self.issuer)))

    def _run(self, flow: Flow[T], cancel: threading.Event | None = None) -> T:
        return run(flow, http=self._http, timeout=self.timeout, cancel=cancel)

    async def _run_async(self, flow: Flow[T]) -> T:
        return await run_async(flow, http=self._async_http, timeout=self.timeout)

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
        self._run(self._endpoints_flow(authorize=True))
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
            resource=self.resource or None,
            **self._authentication(),
        )

    def _refresh_request(self, refresh_token: str, scope: str | None) -> TokenRequest:
        assert self.token_endpoint is not None
        return refresh_request(
            self.token_endpoint,
            refresh_token=refresh_token,
            scope=scope,
            resource=self.resource or None,
            **self._authentication(),
        )

    def _client_credentials_request(
        self, scope: str | Sequence[str] | None, resource: str | Sequence[str] | None
    ) -> TokenRequest:
        assert self.token_endpoint is not None
        return client_credentials_request(
            self.token_endpoint,
            scope=self.scope if scope is None else scope,
            resource=(self.resource or None) if resource is None else resource,
            **self._authentication(),
        )

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> Tokens:
        """Exchange an authorization code for tokens (sent once: codes are single use).

        Raises :class:`OAuthError` (e.g. ``invalid_grant`` for a wrong PKCE
        verifier) or :class:`TokenEndpointError` (network, 5xx, malformed reply).
        """
        return self._run(self._exchange_flow(code, redirect_uri, code_verifier))

    async def exchange_code_async(
        self, code: str, redirect_uri: str, code_verifier: str
    ) -> Tokens:
        """Async :meth:`exchange_code`."""
        return await self._run_async(self._exchange_flow(code, redirect_uri, code_verifier))

    def _exchange_flow(self, code: str, redirect_uri: str, code_verifier: str) -> Flow[Tokens]:
        yield from self._endpoints_flow()
        return (yield from token_flow(self._code_request(code, redirect_uri, code_verifier)))

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
        return self._run(self._refresh_flow(refresh_token, previous, scope, max_retries, backoff))

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
        return await self._run_async(
            self._refresh_flow(refresh_token, previous, scope, max_retries, backoff)
        )

    def _refresh_flow(
        self,
        refresh_token: str,
        previous: Tokens | None,
        scope: str | None,
        max_retries: int,
        backoff: float,
    ) -> Flow[Tokens]:
        yield from self._endpoints_flow()
        return (
            yield from token_flow(
                lambda: self._refresh_request(refresh_token, scope),  # a fresh assertion per try
                max_retries=max_retries,
                backoff=backoff,
                previous=previous,
            )
        )

    # -- the client credentials grant (RFC 6749 4.4) -----------------------------------

    def client_credentials(
        self,
        *,
        scope: str | Sequence[str] | None = None,
        resource: str | Sequence[str] | None = None,
        store: TokenStore | None = None,
        key: str | None = None,
        secret_env: str | None = None,
        store_secret: bool = False,
        max_retries: int = 0,
        backoff: float = 0.2,
    ) -> Tokens:
        """Get an access token for the client itself (machine to machine, no person).

        The client authenticates with its secret (``client_secret_basic`` or
        ``client_secret_post``) or a ``private_key_jwt`` assertion (a fresh one,
        unique ``jti``, for every attempt). ``scope`` / ``resource`` default to
        the client's. No refresh token is expected: when the token expires,
        :class:`~oauth_callback.manager.TokenManager` asks for a new one the
        same way, once across processes.

        With ``store`` and ``key`` the login is saved like any login (the
        registration of :meth:`machine_client_info` first, then the tokens).
        The client secret is not saved unless ``store_secret`` (do it only in an
        encrypted store or the keychain); ``secret_env`` names the environment
        variable a later process reads it from instead. A private key loaded
        from a file is recorded by its path, never its content.

        Network errors, 5xx and 429 are retried ``max_retries`` times. Raises
        :class:`InvalidClientError` (wrong secret or key, unknown client, a
        method the server refuses), another :class:`OAuthError`
        (``unauthorized_client``, ``invalid_scope``), :class:`TokenEndpointError`,
        :class:`ValueError` for a public client or ``store`` without ``key``.
        """
        return self._run(self._client_credentials_flow(
            scope, resource, store, key, secret_env, store_secret, max_retries, backoff))

    async def client_credentials_async(
        self,
        *,
        scope: str | Sequence[str] | None = None,
        resource: str | Sequence[str] | None = None,
        store: TokenStore | None = None,
        key: str | None = None,
        secret_env: str | None = None,
        store_secret: bool = False,
        max_retries: int = 0,
        backoff: float = 0.2,
    ) -> Tokens:
        """Async :meth:`client_credentials`."""
        return await self._run_async(self._client_credentials_flow(
            scope, resource, store, key, secret_env, store_secret, max_retries, backoff))

    def _client_credentials_flow(
        self,
        scope: str | Sequence[str] | None,
        resource: str | Sequence[str] | None,
        store: TokenStore | None,
        key: str | None,
        secret_env: str | None,
        store_secret: bool,
        max_retries: int,
        backoff: float,
    ) -> Flow[Tokens]:
        if (store is None) != (key is None):
            raise ValueError("store and key go together")
        yield from self._endpoints_flow()
        tokens = yield from token_flow(
            lambda: self._client_credentials_request(scope, resource),  # a fresh assertion
            max_retries=max_retries,
            backoff=backoff,
        )
        if store is not None and key is not None:
            client = self.machine_client_info(scope, resource, secret_env=secret_env,
                                              store_secret=store_secret)
            yield SaveLogin(store, key, tokens, client)
        return tokens

    def machine_client_info(
        self,
        scope: str | Sequence[str] | None = None,
        resource: str | Sequence[str] | None = None,
        *,
        secret_env: str | None = None,
        store_secret: bool = False,
    ) -> ClientInfo:
        """The registration a client-credentials login saves: :meth:`client_info`
        marked ``grantType: client_credentials`` (so :class:`TokenManager` renews
        it with the same grant), the secret left out unless ``store_secret``
        (``clientSecretEnv`` names where to read it), the private key by its
        file path (``privateKeyFile``, ``signingAlgorithm``, ``keyId``)."""
        base = self.client_info()
        extra: dict[str, Any] = dict(base.extra)
        extra[GRANT_TYPE_FIELD] = "client_credentials"
        if secret_env is not None and not store_secret:
            extra[SECRET_ENV_FIELD] = secret_env
        signer = self._signer
        if signer is not None and signer.source is not None:
            extra[KEY_FILE_FIELD] = os.path.abspath(signer.source)
            extra[KEY_ALGORITHM_FIELD] = signer.algorithm
            if signer.kid is not None:
                extra[KEY_ID_FIELD] = signer.kid
        if resource is not None:
            resources = [resource] if isinstance(resource, str) else list(resource)
            extra["resource"] = resources[0] if len(resources) == 1 else resources
        scope_text = scope if scope is None or isinstance(scope, str) else " ".join(scope)
        return base.replace(
            client_secret=self._client_secret if store_secret else None,
            scope=scope_text if scope_text is not None else base.scope,
            extra=extra,
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
        set), :class:`OAuthStateError` (state mismatch), :class:`IssuerMismatchError`
        (RFC 9207 issuer mismatch),
        :class:`OAuthError` (the provider refused, or the code exchange
        failed), :class:`TokenEndpointError`, :class:`PortInUseError`,
        :class:`IdTokenError` (a bad ID Token), :class:`AccountMismatchError`
        (``key`` holds another account of the same issuer and not
        ``replace_account``).
        On failure the tokens and client stored under ``key`` are left as they were.
        """
        options = LoopbackOptions(host, port, callback_path, success_html, error_html, on_request)
        flow = self._login_flow(store, key, options, open_browser, timeout, extra_params,
                                paste, replace_account)
        return self._run(flow, cancel)

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
        options = LoopbackOptions(host, port, callback_path, success_html, error_html, on_request)
        flow = self._login_flow(store, key, options, open_browser, timeout, extra_params,
                                paste, replace_account)
        return await self._run_async(flow)

    def _login_flow(
        self,
        store: TokenStore,
        key: str,
        options: LoopbackOptions,
        open_browser: OpenBrowser,
        timeout: float | None,
        extra_params: Mapping[str, str] | None,
        paste: IO[str] | None = None,
        replace_account: bool = False,
    ) -> Flow[Tokens]:
        """The authorization code flow with PKCE on a loopback redirect, once for both shells."""
        yield from self._endpoints_flow(authorize=True)
        verifier, challenge = generate_pkce()
        state = generate_state()
        redirect_uri: str = yield StartCallback(options, state)
        nonce, params = _login_nonce(self.scope, self.metadata, extra_params)
        url = self._authorization_url(redirect_uri, state, challenge, params)
        yield SaveSession(store, key, _session(verifier, state, redirect_uri))
        judge = None if paste is None else functools.partial(
            judge_pasted, redirect_uri=redirect_uri, expected_state=state,
            expected_issuer=self.issuer, iss_required=self._iss_required,
        )

        def code_flow() -> Flow[Tokens]:
            """Show the URL, take the callback (or a pasted redirect), exchange the code,
            find out who logged in, save the login."""
            logger.debug("waiting for the authorization callback on %s", redirect_uri)
            yield OpenURL(url, open_browser)
            result: CallbackResult = yield WaitCallback(timeout, state, paste, judge)
            yield CloseCallback()
            code = check_callback(result, state, self.issuer, iss_required=self._iss_required)
            tokens = yield from self._exchange_flow(code, redirect_uri, verifier)
            identity = yield from self._identify_flow(tokens, nonce)
            yield from self._save_flow(store, key, tokens, identity, redirect_uri, replace_account)
            return tokens

        tokens = yield from ensure(code_flow(), DeleteSession(store, key))
        logger.info("login for %r succeeded", key)
        return tokens

    def _save_flow(
        self,
        store: TokenStore,
        key: str,
        tokens: Tokens,
        identity: Identity | None,
        redirect_uri: str | None,
        replace_account: bool,
    ) -> Flow[None]:
        """Save a login: refuse another account under ``key``, then client and tokens."""
        if identity is not None and not replace_account:
            stored: ClientInfo | None = yield LoadClient(store, key)
            if stored is not None and _other_account(stored.identity, identity):
                assert stored.identity is not None
                raise AccountMismatchError(key, stored.identity, identity)
        client = self.client_info(redirect_uri).replace(identity=identity)
        yield SaveLogin(store, key, tokens, client)

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
        token_endpoint, resource = self.token_endpoint, self.resource or None
        client = self._authentication(assertion=False)
        request = device_authorization_request(
            endpoint, scope=self.scope, resource=resource, **client
        )
        return device_login_flow(
            request,
            lambda grant: device_token_request(
                token_endpoint, device_code=grant.device_code, resource=resource, **client
            ),
        )

    def login_device(
        self,
        store: TokenStore,
        key: str,
        *,
        on_code: Callable[[DeviceAuthorization], object] | None = None,
        cancel: threading.Event | None = None,
        replace_account: bool = False,
    ) -> Tokens:
        """Log in with the device authorization grant (RFC 8628) and store the tokens.

        Asks the device authorization endpoint (discovered, or given to the
        constructor) for a code, shows it with ``on_code`` (default: one line
        on stderr), polls the token endpoint as the rules of
        :mod:`oauth_callback.device` say, then finds out who logged in and
        saves the client registration and the tokens under ``key`` exactly
        like :meth:`login` (``replace_account`` as there), so a later process
        refreshes them with only the store and the key.

        Raises :class:`DiscoveryError` (no device endpoint),
        :class:`OAuthError` (``access_denied``, ``expired_token``, ...),
        :class:`TokenEndpointError` (network, 5xx), :class:`CallbackCancelled`
        soon after ``cancel`` is set; ``KeyboardInterrupt`` stops it too.
        Nothing is stored on failure.
        """
        return self._run(
            self._device_login_flow(store, key, on_code, replace_account), cancel
        )

    async def login_device_async(
        self,
        store: TokenStore,
        key: str,
        *,
        on_code: Callable[[DeviceAuthorization], object] | None = None,
        replace_account: bool = False,
    ) -> Tokens:
        """Async :meth:`login_device` (asyncio or trio); cancel it by cancelling the task.

        ``on_code``: a plain function runs in a worker thread, an ``async`` one is awaited.
        """
        return await self._run_async(
            self._device_login_flow(store, key, on_code, replace_account)
        )

    def _device_login_flow(
        self,
        store: TokenStore,
        key: str,
        on_code: Callable[[DeviceAuthorization], object] | None,
        replace_account: bool,
    ) -> Flow[Tokens]:
        if self._device_needs_metadata():
            assert self.issuer is not None
            self._adopt((yield from metadata_flow(self.issuer)))
        show = on_code if on_code is not None else _print_device_code

        def effect(item: Any) -> Any:
            return Show(show, item) if isinstance(item, DeviceAuthorization) else item

        tokens = yield from translated(self._device_flow(), effect)
        identity = yield from self._identify_flow(tokens, None)
        yield from self._save_flow(store, key, tokens, identity, None, replace_account)
        logger.info("device login for %r succeeded", key)
        return tokens

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
        self._run(self._revoke_flow(token, token_type_hint))

    async def revoke_async(self, token: str, *, token_type_hint: str | None = None) -> None:
        """Async :meth:`revoke`."""
        await self._run_async(self._revoke_flow(token, token_type_hint))

    def _revoke_flow(self, token: str, token_type_hint: str | None) -> Flow[None]:
        if self.metadata is None and self.issuer is not None:
            self._adopt((yield from metadata_flow(self.issuer)))
        yield from revocation_flow(self._revocation_request(token, token_type_hint))

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
            **self._authentication(),
        )

    # -- who logged in ----------------------------------------------------------------

    def identify(self, tokens: Tokens, *, nonce: str | None = None) -> Identity | None:
        """Who ``tokens`` belong to (:func:`~oauth_callback.identity.identify_flow`).

        ``nonce`` is the one sent in the authorization request of an OpenID
        Connect login (its ID Token is then required and validated). Raises
        :class:`IdTokenError`, or :class:`DiscoveryError` when the provider's
        keys cannot be fetched.
        """
        return self._run(self._identify_flow(tokens, nonce))

    async def identify_async(self, tokens: Tokens, *, nonce: str | None = None) -> Identity | None:
        """Async :meth:`identify`."""
        return await self._run_async(self._identify_flow(tokens, nonce))

    def _identify_flow(self, tokens: Tokens, nonce: str | None) -> Flow[Identity | None]:
        flow = identify_flow(tokens, client_id=self.client_id, metadata=self.metadata,
                             nonce=nonce)
        return (yield from translated(flow, _as_get))

    def userinfo(self, access_token: str) -> dict[str, Any]:
        """The provider's userinfo claims for ``access_token`` (OIDC Core 5.3).

        Discovers the metadata first when it is not known. Raises
        :class:`DiscoveryError` when the provider has no userinfo endpoint or
        cannot be reached, :class:`ResourceAccessError` when it refuses the token.
        """
        return self._run(self._userinfo_flow(access_token))

    async def userinfo_async(self, access_token: str) -> dict[str, Any]:
        """Async :meth:`userinfo`."""
        return await self._run_async(self._userinfo_flow(access_token))

    def _userinfo_flow(self, access_token: str) -> Flow[dict[str, Any]]:
        if self.metadata is None and self.issuer is not None:
            self._adopt((yield from metadata_flow(self.issuer)))
        flow = userinfo_flow(self._userinfo_endpoint(), access_token)
        return (yield from translated(flow, _as_get))

    def _userinfo_endpoint(self) -> str:
        endpoint = self.metadata.userinfo_endpoint if self.metadata is not None else None
        if endpoint is None:
            raise DiscoveryError(
                f"authorization server {self.issuer or self.token_endpoint!r} advertises no "
                "userinfo_endpoint"
            )
        return endpoint


def _as_get(fetch: Fetch) -> HttpGet:
    return HttpGet(fetch.url, "provider URL", fetch.headers)


def _print_device_code(authorization: DeviceAuthorization) -> None:
    import sys

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


def _stored_credentials(info: ClientInfo) -> tuple[str | None, PrivateKeyJWT | None]:
    """The secret and private key a stored registration names (see
    :meth:`OAuthClient.machine_client_info`)."""
    secret = info.client_secret
    env_name = info.extra.get(SECRET_ENV_FIELD)
    if secret is None and isinstance(env_name, str) and env_name:
        secret = os.environ.get(env_name) or None
        if secret is None:
            raise MissingCredentialsError(
                f"the client secret of {info.client_id!r} is read from the environment "
                f"variable {env_name}, which is not set"
            )
    key_file = info.extra.get(KEY_FILE_FIELD)
    if not isinstance(key_file, str) or not key_file:
        return secret, None
    algorithm = info.extra.get(KEY_ALGORITHM_FIELD)
    kid = info.extra.get(KEY_ID_FIELD)
    try:
        signer = PrivateKeyJWT.from_pem_file(
            key_file,
            algorithm=algorithm if isinstance(algorithm, str) else "ES256",
            kid=kid if isinstance(kid, str) else None,
        )
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MissingCredentialsError(
            f"the private key of {info.client_id!r} could not be read from {key_file}: {reason}"
        ) from None
    return secret, signer


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


def _registration_flow(
    issuer_or_metadata: str | ServerMetadata,
    client_name: str,
    redirect_uris: Sequence[str],
    scope: str | None,
    auth_method: str,
    extra_metadata: Mapping[str, Any] | None,
) -> Flow[tuple[ServerMetadata, dict[str, Any]]]:
    """Dynamic client registration (RFC 7591): the metadata and the constructor
    arguments (``client_id``, ``client_secret``, ``token_endpoint_auth_method``)."""
    if isinstance(issuer_or_metadata, ServerMetadata):
        metadata = issuer_or_metadata
    else:
        metadata = yield from metadata_flow(issuer_or_metadata)
    url, body = _registration_request(
        metadata, client_name, redirect_uris, scope, auth_method, extra_metadata
    )
    secrets = _registration_secrets(body)
    answer: RawResponse | RegistrationError = yield PostJSON(url, body, secrets=secrets)
    if isinstance(answer, RegistrationError):
        raise answer
    return metadata, _registration_answer(answer, secrets)


def _registration_answer(response: RawResponse, secrets: Sequence[str]) -> dict[str, Any]:
    """Judge a registration response (RFC 7591 3.2): the new client's arguments."""
    data = _json_object(response.body)
    if data is None:
        raise RegistrationError(
            f"registration endpoint answered HTTP {response.status} without a JSON object",
            status_code=response.status,
        )
    if response.status >= 400 or "error" in data:
        error = data.get("error")
        if isinstance(error, str) and error and response.status < 500:
            # The same redaction and control-character stripping as token errors.
            raise _error_answer(data, secrets)
        raise RegistrationError(
            f"registration endpoint answered HTTP {response.status}",
            status_code=response.status,
        )
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise RegistrationError(
            "registration response has no 'client_id'", status_code=response.status
        )
    secret = data.get("client_secret")
    method = data.get("token_endpoint_auth_method")
    return {
        "client_id": client_id,
        "client_secret": secret if isinstance(secret, str) and secret else None,
        "token_endpoint_auth_method": method if isinstance(method, str) else None,
    }
