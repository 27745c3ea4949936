"""An embedded mock OAuth 2.1 authorization server for tests: :class:`MockProvider`.

It runs on ``127.0.0.1`` on an ephemeral port in a background daemon thread
and implements just enough of the specifications to exercise a real client:

* RFC 8414 metadata at ``/.well-known/oauth-authorization-server`` (and
  ``/.well-known/openid-configuration``);
* ``/authorize``: authorization code flow with PKCE S256 (RFC 7636), loopback
  redirect URIs with any port (RFC 8252 7.3), ``iss`` in the response
  (RFC 9207), optional HTML consent page;
* ``/token``: ``authorization_code`` and ``refresh_token`` grants, client
  authentication ``none`` / ``client_secret_basic`` / ``client_secret_post``,
  refresh-token rotation with reuse detection (a rotated-away refresh token
  revokes the whole grant);
* ``/token``, machine to machine: the ``client_credentials`` grant (RFC 6749
  4.4) and ``private_key_jwt`` client authentication (RFC 7523: signature,
  ``iss``/``sub``, ``aud``, ``exp`` and ``jti`` reuse verified; needs
  ``joserfc``), for clients made with :meth:`MockProvider.register_machine_client`;
  *auth_methods* restricts the client authentication methods accepted and
  advertised (e.g. Basic only);
* ``/register``: dynamic client registration (RFC 7591), and each client's
  configuration endpoint ``/register/<client_id>`` (RFC 7592 read, with the
  registration access token; *client_configuration*);
  :meth:`MockProvider.forget_client` makes a registration stale;
* ``/device_authorization`` and the ``device_code`` grant (RFC 8628), with a
  ``/device`` page where a person (or a test's browser) enters the user code
  and approves or denies; :meth:`MockProvider.approve_device` does it without
  a browser;
* ``/userinfo`` and ``/me``: a Bearer-protected resource answering the claims
  of the user who approved (``{"sub": ..., "email": ...}``);
* OpenID Connect: with ``openid`` in the scope the code exchange returns an
  ``id_token`` (RS256, carrying the request's ``nonce``) signed with a key
  published at ``/jwks``; :meth:`MockProvider.rotate_signing_key` rotates it,
  and one-shot knobs forge or alter the next ID Token;
* ``/revoke``: token revocation (RFC 7009); a revoked refresh token ends its grant;
* several users (:meth:`MockProvider.add_user`); :attr:`MockProvider.approving_user`
  chooses who approves the next authorizations.

Every knob and counter is thread-safe. This is a *test tool*: it keeps the
form fields of every token request, secrets included, in
:attr:`MockProvider.token_requests`. It never logs anything.

Example::

    with MockProvider() as provider:
        ...  # point the client at provider.issuer
        assert provider.refresh_count == 1
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import http.client
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar, cast, overload
from urllib.parse import parse_qsl, unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

__all__ = ["DEVICE_CODE_GRANT", "DevicePoll", "MockProvider", "follow_redirects"]

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PKCE_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
#: The ``grant_type`` of a device access token request (RFC 8628 3.4).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_GRANT_TYPES = ("authorization_code", "refresh_token", DEVICE_CODE_GRANT)
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_TOKEN_AUTH_METHODS = (*_AUTH_METHODS, "private_key_jwt")
_MAX_ASSERTION_LIFETIME = 300.0
_SCOPES_SUPPORTED = ("openid", "profile", "email", "offline_access", "read", "write")
_DEFAULT_SCOPE = "read"
_CODE_LIFETIME = 600.0
_MAX_BODY = 1 << 20
_REALM = "mock-oauth"

_COUNTERS = (
    "authorize_requests",
    "code_exchanges",
    "refresh_requests",
    "refresh_count",
    "invalid_grant_count",
    "reuse_detected",
    "registrations",
    "client_configuration_requests",
    "codes_issued",
    "token_requests",
    "device_authorizations",
    "device_polls",
    "device_slow_downs",
    "device_polls_too_fast",
    "device_approvals",
    "device_denials",
    "client_credentials_count",
    "jwks_requests",
    "revocation_requests",
    "revocations",
    "userinfo_requests",
)


# --------------------------------------------------------------------------- records


@dataclass
class _Client:
    client_id: str
    client_secret: str | None
    # None: any loopback redirect URI is accepted (preregistered clients).
    redirect_uris: tuple[str, ...] | None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Machine clients (register_machine_client): the scopes client_credentials
    # may grant, and the PEM public key private_key_jwt assertions verify with.
    machine_scope: str | None = None
    public_key: str | None = None
    # RFC 7592: the bearer token of the client's configuration endpoint.
    registration_access_token: str | None = None


@dataclass
class _Grant:
    client_id: str
    scope: str
    revoked: bool = False
    subject: str | None = None


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    scope: str
    expires_at: float
    used: bool = False
    grant_id: str | None = None
    subject: str | None = None
    nonce: str | None = None


@dataclass
class _AccessToken:
    grant_id: str
    client_id: str
    scope: str
    expires_at: float | None
    revoked: bool = False


@dataclass
class _RefreshToken:
    grant_id: str
    client_id: str
    rotated: bool = False


@dataclass
class _Pending:
    client_id: str
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str | None
    nonce: str | None = None


@dataclass
class _DeviceCode:
    client_id: str
    user_code: str
    scope: str
    expires_at: float  # time.time()
    interval: float  # seconds the client must wait between polls; grows on slow_down
    status: str = "pending"  # pending | approved | denied | issued
    last_poll: float | None = None  # time.monotonic() of the previous poll
    subject: str | None = None  # who approved


@dataclass(frozen=True)
class DevicePoll:
    """One device-grant poll of ``/token`` as the provider saw it.

    ``at`` is ``time.monotonic()`` when the request arrived; ``answer`` is the
    OAuth ``error`` answered (``authorization_pending``, ``slow_down``,
    ``access_denied``, ``expired_token``, ...), ``"tokens"`` for a success, or
    ``"HTTP <status>"`` for an injected failure; ``interval`` is the interval
    the provider required before this poll.
    """

    at: float
    answer: str
    interval: float


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class _TokenError(Exception):
    """An RFC 6749 5.2 error answer from the token (or registration) endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status


class _RedirectError(Exception):
    """An error to deliver by redirect to an already validated redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(error)
        self.error = error
        self.description = description


# --------------------------------------------------------------------------- helpers


def _json_response(status: int, payload: Mapping[str, Any], *extra: tuple[str, str]) -> _Response:
    body = json.dumps(payload).encode("utf-8")
    headers = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("Pragma", "no-cache"),
        *extra,
    ]
    return _Response(status, body, headers)


def _html_response(
    status: int, title: str, body_html: str, *, form_action: Sequence[str] = ()
) -> _Response:
    """An HTML page with a strict CSP: no script at all, forms post only to
    ``'self'`` and to the origins in *form_action* (where a form's redirect
    may lead: browsers check redirects after a form post against it too)."""
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
    )
    actions = " ".join(["'self'", *form_action])
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-store"),
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; "
            f"form-action {actions}; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    ]
    return _Response(status, page.encode("utf-8"), headers)


def _error_page(message: str) -> _Response:
    return _html_response(
        400, "Authorization error", f"<h1>Authorization error</h1><p>{html.escape(message)}</p>"
    )


def _parse_params(text: str) -> dict[str, str]:
    """Parse a query string or form body; a repeated parameter is an error (RFC 6749 3.1)."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in out:
            raise ValueError(f"parameter {key!r} repeated")
        out[key] = value
    return out


def _is_loopback(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in _LOOPBACK_HOSTS
        and not parts.fragment
        and parts.username is None
        and parts.password is None
    )


def _redirect_allowed(client: _Client, uri: str) -> bool:
    """Exact match, or for loopback URIs a match of everything but the port (RFC 8252 7.3)."""
    if client.redirect_uris is None:
        return _is_loopback(uri)
    if "#" in uri:
        return False
    for registered in client.redirect_uris:
        if uri == registered:
            return True
        if _is_loopback(uri) and _is_loopback(registered):
            got, reg = urlsplit(uri), urlsplit(registered)
            if (got.hostname, got.path or "/", got.query) == (
                reg.hostname,
                reg.path or "/",
                reg.query,
            ):
                return True
    return False


def _with_params(uri: str, params: Iterable[tuple[str, str | None]]) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params if v is not None)
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], provider: MockProvider) -> None:
        self.provider = provider
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def close_connections(self) -> None:
        """Cut kept-alive connections so a stopped provider really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: client disconnects are expected in tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MockOAuth/1.0"
    sys_version = ""
    timeout = 30
    disable_nagle_algorithm = True

    @property
    def _srv(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self._srv.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._srv.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Never log: request lines carry codes and states."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        provider = self._srv.provider
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = b""
            if method == "POST":
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self.close_connection = True
                    response = _Response(411, b"Content-Length required")
                    self._send(response)
                    return
                length = int(headers.get("content-length") or 0)
                if length < 0 or length > _MAX_BODY:
                    self.close_connection = True
                    self._send(_Response(413, b"request body too large"))
                    return
                body = self.rfile.read(length)
            response = provider._handle(method, self.path, headers, body)
        except Exception as exc:
            provider._record_error(exc)
            self.close_connection = True
            response = _json_response(
                500, {"error": "server_error", "error_description": "internal error"}
            )
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)


# --------------------------------------------------------------------------- provider attributes

_V = TypeVar("_V")


class _Attribute(Generic[_V]):
    """A public attribute of :class:`MockProvider`: ``get(provider, name)`` reads it;
    ``put(provider, name, value)`` sets it (read-only without ``put``)."""

    def __init__(
        self,
        doc: str,
        get: Callable[[MockProvider, str], _V],
        put: Callable[[MockProvider, str, _V], None] | None = None,
    ) -> None:
        self.__doc__ = doc
        self._get, self._put = get, put
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, provider: None, owner: type) -> _Attribute[_V]: ...
    @overload
    def __get__(self, provider: MockProvider, owner: type) -> _V: ...
    def __get__(self, provider: MockProvider | None, owner: type) -> _Attribute[_V] | _V:
        return self if provider is None else self._get(provider, self.name)

    def __set__(self, provider: MockProvider, value: _V) -> None:
        if self._put is None:
            raise AttributeError(f"MockProvider.{self.name} is read-only")
        self._put(provider, self.name, value)


def _counter(doc: str) -> _Attribute[int]:
    """The request counter of the attribute's name (read under the provider's lock)."""
    return _Attribute(doc, lambda provider, name: provider._count(name))


def _endpoint(path: str, doc: str) -> _Attribute[str]:
    """The provider's issuer URL + ``path``."""
    return _Attribute(doc, lambda provider, _name: provider.issuer + path)


def _knob(doc: str, convert: Callable[[Any], _V] | None = None) -> _Attribute[_V]:
    """A setting kept in ``_<name>``, read and written under the provider's lock
    (``convert`` applied to what is set)."""

    def get(provider: MockProvider, name: str) -> _V:
        with provider._lock:
            value: _V = getattr(provider, "_" + name)
            return value

    def put(provider: MockProvider, name: str, value: _V) -> None:
        if convert is not None:
            value = convert(value)
        with provider._lock:
            setattr(provider, "_" + name, value)

    return _Attribute(doc, get, put)


# --------------------------------------------------------------------------- provider


class MockProvider:
    """An in-process mock OAuth 2.1 authorization server on ``127.0.0.1``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The port is
    ephemeral unless *port* is given; once bound it is kept, so a provider
    restarted with ``start()`` after ``stop()`` keeps its issuer URL and state.

    Constructor knobs:

    * *expires_in*: access-token lifetime in seconds (``None``: no ``expires_in``
      in responses and tokens never expire); also settable at run time.
    * *rotate_refresh_tokens*: each refresh returns a new refresh token and
      invalidates the old one; a rotated-away token presented again revokes the
      whole grant (reuse detection). When ``False`` the same token keeps working.
    * *require_pkce*: ``/authorize`` requires ``code_challenge`` with method S256.
    * *consent*: ``GET /authorize`` shows an HTML consent form instead of auto-approving.
    * *issue_refresh_token*: the code exchange returns a refresh token.
    * *omit_refresh_token_on_refresh*: refresh responses carry no refresh token
      and the presented one stays valid.
    * *include_iss*: authorization responses carry ``iss`` (RFC 9207).
    * *clients*: extra preregistered clients, ``client_id -> client_secret``
      (``None`` for a public client). Preregistered clients accept any loopback
      redirect URI, any port.
    * *client_id*: the id of the default preregistered public client.
    * *subject*: the ``sub`` of the first user, who approves unless
      :attr:`approving_user` names another (see :meth:`add_user`).
    * *auth_methods*: the client authentication methods ``/token`` accepts and
      the metadata advertises (default: ``none``, ``client_secret_basic``,
      ``client_secret_post``, ``private_key_jwt``); e.g. ``["client_secret_basic"]``
      for a server that supports only what RFC 6749 2.3.1 requires. A
      confidential client authenticating another way gets ``invalid_client``
      (public clients, method ``none``, are always accepted).
    * *client_configuration*: registration responses carry
      ``registration_client_uri`` and ``registration_access_token`` and the
      client configuration endpoint answers (RFC 7592); ``False``: a server
      without RFC 7592 (neither field, ``/register/<id>`` is ``404``).
      :attr:`rotate_on_configuration_read` (run time) makes each read issue a new
      registration access token and, for a confidential client, a new secret
      (RFC 7592 3 allows both).
    """

    def __init__(
        self,
        *,
        expires_in: int | None = 3600,
        rotate_refresh_tokens: bool = True,
        require_pkce: bool = True,
        consent: bool = False,
        issue_refresh_token: bool = True,
        omit_refresh_token_on_refresh: bool = False,
        include_iss: bool = True,
        clients: Mapping[str, str | None] | None = None,
        client_id: str = "test-client",
        subject: str = "test-user",
        port: int = 0,
        auth_methods: Sequence[str] | None = None,
        client_configuration: bool = True,
    ) -> None:
        self.client_configuration = client_configuration
        self._rotate_on_configuration_read = False
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.require_pkce = require_pkce
        self.consent = consent
        self.issue_refresh_token = issue_refresh_token
        self.omit_refresh_token_on_refresh = omit_refresh_token_on_refresh
        self.include_iss = include_iss
        self.subject = subject
        self.client_id = client_id
        if auth_methods is not None and not set(auth_methods) <= set(_TOKEN_AUTH_METHODS):
            raise ValueError(f"auth_methods must be among {_TOKEN_AUTH_METHODS}")
        self.auth_methods: tuple[str, ...] = tuple(auth_methods or _TOKEN_AUTH_METHODS)

        self._lock = threading.RLock()
        self._expires_in = expires_in
        self._token_delay = 0.0
        self._next_authorize_error: str | None = None
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_body: str | None = None

        self._clients: dict[str, _Client] = {client_id: _Client(client_id, None, None)}
        for cid, secret in (clients or {}).items():
            self._clients[cid] = _Client(cid, secret, None)
        # forget_client(): client_id -> (the forgotten record, how /authorize answers it)
        self._forgotten: dict[str, tuple[_Client, str]] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._pending: dict[str, _Pending] = {}
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._token_requests: list[dict[str, str]] = []
        self._errors: list[BaseException] = []
        self._token_request_times: list[float] = []
        self._init_device()
        self._seen_jti: dict[str, float] = {}
        self._assertion_failures: list[str] = []
        self._last_access_token: str | None = None

        self._init_accounts()

        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MockProvider:
        """Bind ``127.0.0.1`` and serve in a daemon thread; returns ``self``."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("MockProvider is already running")
            server = _Server(("127.0.0.1", self._port), self)
            self._port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"MockProvider:{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and open connections (idempotent)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is currently serving."""
        with self._lock:
            return self._server is not None

    # ------------------------------------------------------------------ URLs

    @property
    def port(self) -> int:
        """The bound port (raises ``RuntimeError`` before the first :meth:`start`)."""
        if not self._port:
            raise RuntimeError("MockProvider is not started")
        return self._port

    @property
    def issuer(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    authorization_endpoint = _endpoint("/authorize", "``{issuer}/authorize``.")

    token_endpoint = _endpoint("/token", "``{issuer}/token``.")

    registration_endpoint = _endpoint("/register", "``{issuer}/register``.")

    userinfo_endpoint = _endpoint(
        "/userinfo", "``{issuer}/userinfo`` (Bearer-protected; ``/me`` is an alias)."
    )

    metadata_url = _endpoint(
        "/.well-known/oauth-authorization-server",
        "``{issuer}/.well-known/oauth-authorization-server`` (RFC 8414).",
    )

    def metadata(self) -> dict[str, Any]:
        """The RFC 8414 metadata document served at :attr:`metadata_url`."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "registration_endpoint": self.registration_endpoint,
            "userinfo_endpoint": self.userinfo_endpoint,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": [*_GRANT_TYPES, "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": list(self.auth_methods),
            "authorization_response_iss_parameter_supported": True,
            "scopes_supported": list(_SCOPES_SUPPORTED),
            **self._device_metadata(),
            **self._account_metadata(),
        }

    # ------------------------------------------------------------------ clients

    def register_client(
        self, redirect_uris: Sequence[str] | None = None, confidential: bool = False
    ) -> tuple[str, str | None]:
        """Register a client directly (no HTTP, not counted); returns ``(client_id, secret)``.

        With *redirect_uris* ``None`` any loopback redirect URI is accepted;
        otherwise one must match (the port may differ for loopback URIs).
        The secret is ``None`` for a public client.
        """
        client_id = "client_" + secrets.token_urlsafe(12)
        secret = "cs_" + secrets.token_urlsafe(32) if confidential else None
        uris = tuple(redirect_uris) if redirect_uris is not None else None
        with self._lock:
            self._clients[client_id] = _Client(client_id, secret, uris)
        return client_id, secret

    def forget_client(self, client_id: str, *, authorize: str = "page") -> None:
        """Forget a registration, as a server that lost its clients does: the
        token endpoint answers ``invalid_client`` and the client configuration
        endpoint ``401`` (RFC 7592 2.1). *authorize* is how ``/authorize`` answers
        the forgotten client: ``"page"`` an error page (RFC 6749 4.1.2.1),
        ``"redirect"`` an ``unauthorized_client`` error redirect to its registered
        redirect URI, ``"approve"`` a code as before (only the token endpoint
        rejects it). Raises ``KeyError`` for an unknown client, ``ValueError``
        for another *authorize*."""
        if authorize not in ("page", "redirect", "approve"):
            raise ValueError("authorize must be 'page', 'redirect' or 'approve'")
        with self._lock:
            client = self._clients.pop(client_id)
            self._forgotten[client_id] = (client, authorize)

    # ------------------------------------------------------------------ knobs

    expires_in: _Attribute[int | None] = _knob(
        "Lifetime in seconds of access tokens issued from now on (``None``: never expire)."
    )
    token_delay: _Attribute[float] = _knob(
        "Seconds ``/token`` sleeps after processing a request and before answering it.", float
    )
    rotate_on_configuration_read: _Attribute[bool] = _knob(
        "Each RFC 7592 read issues a new registration access token and, for a "
        "confidential client, a new secret (RFC 7592 3 allows both).", bool
    )
    next_authorize_error: _Attribute[str | None] = _knob(
        "One-shot: the next valid ``/authorize`` redirects with ``error=<this>``."
    )

    def fail_next_token_requests(
        self, n: int, status: int = 503, *, body: str | None = None
    ) -> None:
        """Answer the next *n* ``POST /token`` with *status*, consuming no code or token.

        The body is an RFC 6749 error JSON (``temporarily_unavailable`` for 503,
        ``server_error`` otherwise) unless *body* is given, which is sent as
        ``text/plain``. The requests are still recorded and counted.
        """
        with self._lock:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_body = body

    def revoke_all(self) -> None:
        """Revoke every grant: all access and refresh tokens stop working."""
        with self._lock:
            for grant in self._grants.values():
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (refresh tokens are unaffected)."""
        with self._lock:
            past = time.time() - 1
            for token in self._access.values():
                token.expires_at = past

    # ------------------------------------------------------------------ inspection

    def is_access_token_active(self, token: str) -> bool:
        """Whether *token* is a known, unrevoked, unexpired access token."""
        with self._lock:
            rec = self._access.get(token)
            if rec is None or rec.revoked or self._grants[rec.grant_id].revoked:
                return False
            return rec.expires_at is None or rec.expires_at > time.time()

    def is_refresh_token_active(self, token: str) -> bool:
        """Whether *token* is a known refresh token that is neither rotated away nor revoked."""
        with self._lock:
            rec = self._refresh.get(token)
            return rec is not None and not rec.rotated and not self._grants[rec.grant_id].revoked

    @property
    def token_requests(self) -> list[dict[str, str]]:
        """A copy of the form fields of every ``POST /token``, in order.

        Secrets (codes, verifiers, refresh tokens, client secrets) are kept as
        sent: this is a test tool. HTTP Basic credentials are not included.
        """
        with self._lock:
            return [dict(r) for r in self._token_requests]

    @property
    def token_request_times(self) -> list[float]:
        """``time.monotonic()`` at the arrival of every ``POST /token``, parallel to
        :attr:`token_requests` (assert client timing from these, not from sleeps)."""
        with self._lock:
            return list(self._token_request_times)

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of all counters (``token_requests`` is the count here)."""
        with self._lock:
            return dict(self._counters)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised while handling requests (answered with 500)."""
        with self._lock:
            return list(self._errors)

    def _count(self, name: str) -> int:
        with self._lock:
            return self._counters[name]

    authorize_requests = _counter("``GET /authorize`` requests received (valid or not).")

    code_exchanges = _counter("Successful ``authorization_code`` grants.")

    refresh_requests = _counter(
        "``refresh_token`` grant requests, including failed and injected-failure ones."
    )

    refresh_count = _counter("Successful refreshes.")

    invalid_grant_count = _counter("``invalid_grant`` answers from ``/token``.")

    reuse_detected = _counter(
        "Times a rotated-away refresh token was presented (each revokes its grant)."
    )

    registrations = _counter("Successful ``POST /register`` (not :meth:`register_client`).")

    client_configuration_requests = _counter(
        "``GET /register/<client_id>`` requests (RFC 7592 read), answered or refused."
    )

    codes_issued = _counter("Authorization codes ``/authorize`` minted (used or not).")

    # ------------------------------------------------------------------ request handling

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        parts = urlsplit(raw_path)
        path = parts.path
        routes: dict[str, tuple[str, ...]] = {
            "/.well-known/oauth-authorization-server": ("GET",),
            "/.well-known/openid-configuration": ("GET",),
            "/authorize": ("GET", "POST"),
            "/token": ("POST",),
            "/register": ("POST",),
            "/userinfo": ("GET",),
            "/me": ("GET",),
            "/device_authorization": ("POST",),
            "/device": ("GET", "POST"),
            "/jwks": ("GET",),
            "/revoke": ("POST",),
        }
        if path.startswith("/register/") and self.client_configuration:
            if method != "GET":
                return _json_response(405, {"error": "method_not_allowed"}, ("Allow", "GET"))
            return self._client_configuration(path[len("/register/"):], headers)
        if path not in routes or (path.startswith("/device") and not self.device_flow):
            return _json_response(404, {"error": "not_found"})
        if method not in routes[path]:
            return _json_response(
                405, {"error": "method_not_allowed"}, ("Allow", ", ".join(routes[path]))
            )
        if path.startswith("/.well-known/"):
            return _json_response(200, self.metadata())
        if path == "/authorize":
            if method == "GET":
                return self._authorize_get(parts.query)
            return self._authorize_post(body)
        if path == "/token":
            return self._token(headers, body)
        if path == "/register":
            return self._register(body)
        if path == "/device_authorization":
            return self._device_authorization(headers, body)
        if path == "/device":
            return self._device_page(parts.query) if method == "GET" else self._device_post(body)
        if path == "/jwks":
            return self._jwks()
        if path == "/revoke":
            return self._revoke(headers, body)
        return self._userinfo(headers)

    # /authorize ---------------------------------------------------------------

    def _authorize_redirect(
        self, redirect_uri: str, state: str | None, params: list[tuple[str, str | None]]
    ) -> _Response:
        params = [*params, ("state", state)]
        if self.include_iss:
            params.append(("iss", self.issuer))
        return _Response(
            302,
            headers=[
                ("Location", _with_params(redirect_uri, params)),
                ("Cache-Control", "no-store"),
            ],
        )

    def _issue_code(self, pending: _Pending) -> _Response:
        code = "ac_" + secrets.token_urlsafe(32)
        with self._lock:
            self._counters["codes_issued"] += 1
            self._codes[code] = _Code(
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                scope=pending.scope,
                expires_at=time.time() + _CODE_LIFETIME,
                subject=self._approver,
                nonce=pending.nonce,
            )
        return self._authorize_redirect(pending.redirect_uri, pending.state, [("code", code)])

    def _authorize_get(self, query: str) -> _Response:
        with self._lock:
            self._counters["authorize_requests"] += 1
        try:
            params = _parse_params(query)
        except ValueError as exc:
            return _error_page(str(exc))
        client_id = params.get("client_id")
        redirect_uri = params.get("redirect_uri")
        with self._lock:
            client = self._clients.get(client_id) if client_id else None
            forgotten = self._forgotten.get(client_id) if client_id else None
        if client is None and forgotten is not None and forgotten[1] != "page":
            client = forgotten[0]  # a server that still redirects to (or approves) it
            if forgotten[1] == "redirect" and redirect_uri and _redirect_allowed(
                client, redirect_uri
            ):
                return self._authorize_redirect(
                    redirect_uri,
                    params.get("state"),
                    [("error", "unauthorized_client"), ("error_description", "unknown client")],
                )
        if client is None:
            return _error_page("unknown or missing client_id")
        if not redirect_uri or not _redirect_allowed(client, redirect_uri):
            return _error_page("missing or unregistered redirect_uri")
        state = params.get("state")
        try:
            pending = self._validate_authorize(client, redirect_uri, params)
        except _RedirectError as exc:
            return self._authorize_redirect(
                redirect_uri,
                state,
                [("error", exc.error), ("error_description", exc.description)],
            )
        if self.consent:
            return self._consent_page(pending)
        return self._issue_code(pending)

    def _validate_authorize(
        self, client: _Client, redirect_uri: str, params: Mapping[str, str]
    ) -> _Pending:
        with self._lock:
            forced, self._next_authorize_error = self._next_authorize_error, None
        if forced:
            raise _RedirectError(forced, "error forced by the test")
        if params.get("response_type") != "code":
            raise _RedirectError("unsupported_response_type", "only response_type=code")
        challenge = params.get("code_challenge")
        if challenge is None:
            if self.require_pkce:
                raise _RedirectError("invalid_request", "code_challenge is required")
        else:
            if params.get("code_challenge_method") != "S256":
                raise _RedirectError("invalid_request", "code_challenge_method must be S256")
            if not _PKCE_RE.fullmatch(challenge):
                raise _RedirectError("invalid_request", "malformed code_challenge")
        return _Pending(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            state=params.get("state"),
            scope=params.get("scope") or _DEFAULT_SCOPE,
            code_challenge=challenge,
            nonce=params.get("nonce"),
        )

    def _consent_page(self, pending: _Pending) -> _Response:
        request_id = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[request_id] = pending
        esc = html.escape
        body = (
            "<h1>Authorize access</h1>"
            f"<p>Client <b>{esc(pending.client_id)}</b> requests scope "
            f"<b>{esc(pending.scope)}</b>.</p>"
            "<form method='post' action='/authorize'>"
            f"<input type='hidden' name='request_id' value='{esc(request_id)}'>"
            "<button type='submit' name='action' value='approve'>Approve</button> "
            "<button type='submit' name='action' value='deny'>Deny</button>"
            "</form>"
        )
        return _html_response(
            200, "Authorize access", body, form_action=[_origin(pending.redirect_uri)]
        )

    def _authorize_post(self, body: bytes) -> _Response:
        try:
            form = _parse_params(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return _error_page("malformed form")
        with self._lock:
            pending = self._pending.pop(form.get("request_id", ""), None)
        if pending is None:
            return _error_page("unknown or already answered authorization request")
        action = form.get("action")
        if action is None:
            action = "approve" if "approve" in form else "deny" if "deny" in form else None
        if action == "approve":
            return self._issue_code(pending)
        if action == "deny":
            return self._authorize_redirect(
                pending.redirect_uri,
                pending.state,
                [("error", "access_denied"), ("error_description", "the user denied access")],
            )
        return _error_page("missing action (approve or deny)")

    # /token ---------------------------------------------------------------------

    def _token(self, headers: Mapping[str, str], body: bytes) -> _Response:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            form = _parse_params(body.decode("utf-8"))
            parse_error: str | None = None
        except (ValueError, UnicodeDecodeError) as exc:
            form, parse_error = {}, str(exc)
        arrived = time.monotonic()
        with self._lock:
            self._token_requests.append(dict(form))
            self._token_request_times.append(arrived)
            self._counters["token_requests"] += 1
            if form.get("grant_type") == "refresh_token":
                self._counters["refresh_requests"] += 1
            failing = self._fail_remaining > 0
            if failing:
                self._fail_remaining -= 1
                status, fail_body = self._fail_status, self._fail_body
            delay = self._token_delay
        if failing:
            if fail_body is not None:
                response = _Response(
                    status,
                    fail_body.encode("utf-8"),
                    [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
                )
            else:
                error = "temporarily_unavailable" if status == 503 else "server_error"
                response = _json_response(
                    status, {"error": error, "error_description": "injected failure"}
                )
        else:
            try:
                if content_type != "application/x-www-form-urlencoded":
                    raise _TokenError(
                        "invalid_request", "body must be application/x-www-form-urlencoded"
                    )
                if parse_error is not None:
                    raise _TokenError("invalid_request", parse_error)
                with self._lock:
                    payload = self._token_grant(form, headers.get("authorization"))
                response = _json_response(200, payload)
            except _TokenError as exc:
                extra: list[tuple[str, str]] = []
                if exc.status == 401:
                    extra.append(("WWW-Authenticate", f'Basic realm="{_REALM}"'))
                if exc.error == "invalid_grant":
                    with self._lock:
                        self._counters["invalid_grant_count"] += 1
                response = _json_response(
                    exc.status,
                    {"error": exc.error, "error_description": exc.description},
                    *extra,
                )
        if form.get("grant_type") == DEVICE_CODE_GRANT:
            self._record_device_poll(arrived, form, response)
        if delay > 0:
            time.sleep(delay)
        return response

    def _authenticate(self, form: Mapping[str, str], authorization: str | None) -> _Client:
        if "client_assertion" in form or "client_assertion_type" in form:
            return self._authenticate_assertion(form, authorization)
        basic: tuple[str, str] | None = None
        if authorization:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    raise _TokenError(
                        "invalid_client", "malformed Basic credentials", 401
                    ) from None
                raw_id, sep, raw_secret = decoded.partition(":")
                if not sep:
                    raise _TokenError("invalid_client", "malformed Basic credentials", 401)
                basic = (unquote_plus(raw_id), unquote_plus(raw_secret))
        form_id = form.get("client_id")
        client_id: str
        secret: str | None
        if basic is not None:
            if "client_secret" in form:
                raise _TokenError("invalid_request", "more than one client authentication method")
            if form_id is not None and form_id != basic[0]:
                raise _TokenError("invalid_request", "client_id does not match Basic credentials")
            client_id, secret = basic
        else:
            if not form_id:
                raise _TokenError("invalid_client", "client authentication required", 401)
            client_id, secret = form_id, form.get("client_secret")
        client = self._clients.get(client_id)
        if client is None:
            raise _TokenError("invalid_client", "unknown client", 401)
        if secret:
            self._check_auth_method("client_secret_basic" if basic else "client_secret_post")
        if client.client_secret is None:
            if secret:
                raise _TokenError("invalid_client", "public client sent a secret", 401)
            return client
        if not secret or not secrets.compare_digest(
            secret.encode("utf-8"), client.client_secret.encode("utf-8")
        ):
            raise _TokenError("invalid_client", "client authentication failed", 401)
        return client

    def _token_grant(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """Process a token request; the caller holds the lock."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _TokenError("invalid_request", "grant_type is required")
        client = self._authenticate(form, authorization)
        if grant_type == "authorization_code":
            return self._grant_code(client, form)
        if grant_type == "refresh_token":
            return self._grant_refresh(client, form)
        if grant_type == DEVICE_CODE_GRANT and self.device_flow:
            return self._grant_device(client, form)
        if grant_type == "client_credentials":
            return self._grant_client_credentials(client, form)
        raise _TokenError("unsupported_grant_type", f"grant_type {grant_type!r} not supported")

    def _revoke_grant(self, grant_id: str | None) -> None:
        if grant_id is not None:
            self._grants[grant_id].revoked = True

    def _grant_code(self, client: _Client, form: Mapping[str, str]) -> dict[str, Any]:
        code = form.get("code")
        if not code:
            raise _TokenError("invalid_request", "code is required")
        rec = self._codes.get(code)
        if rec is None:
            raise _TokenError("invalid_grant", "unknown authorization code")
        if rec.used:
            # OAuth 2.1 4.1.3: revoke what the code already produced.
            self._revoke_grant(rec.grant_id)
            raise _TokenError("invalid_grant", "authorization code already used")
        rec.used = True  # single use, even when the exchange below fails
        if rec.expires_at <= time.time():
            raise _TokenError("invalid_grant", "authorization code expired")
        if rec.client_id != client.client_id:
            raise _TokenError("invalid_grant", "code was issued to another client")
        if form.get("redirect_uri") != rec.redirect_uri:
            raise _TokenError("invalid_grant", "redirect_uri does not match the authorization")
        verifier = form.get("code_verifier")
        if rec.code_challenge is None:
            if verifier is not None:
                raise _TokenError("invalid_grant", "code_verifier sent without code_challenge")
        elif (
            verifier is None
            or not _PKCE_RE.fullmatch(verifier)
            or not secrets.compare_digest(_s256(verifier), rec.code_challenge)
        ):
            raise _TokenError("invalid_grant", "PKCE verification failed")
        grant_id = secrets.token_hex(8)
        self._grants[grant_id] = _Grant(client.client_id, rec.scope, subject=rec.subject)
        rec.grant_id = grant_id
        self._counters["code_exchanges"] += 1
        refresh = self._new_refresh(grant_id, client) if self.issue_refresh_token else None
        payload = self._token_payload(grant_id, client, rec.scope, refresh)
        if "openid" in rec.scope.split():
            payload["id_token"] = self._id_token(client.client_id, rec.subject, rec.nonce)
        return payload

    def _grant_refresh(self, client: _Client, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token:
            raise _TokenError("invalid_request", "refresh_token is required")
        rec = self._refresh.get(token)
        if rec is None:
            raise _TokenError("invalid_grant", "unknown refresh token")
        if rec.client_id != client.client_id:
            raise _TokenError("invalid_grant", "refresh token was issued to another client")
        grant = self._grants[rec.grant_id]
        if rec.rotated:
            self._counters["reuse_detected"] += 1
            grant.revoked = True
            raise _TokenError("invalid_grant", "refresh token reuse detected; grant revoked")
        if grant.revoked:
            raise _TokenError("invalid_grant", "grant revoked")
        scope = grant.scope
        requested = form.get("scope")
        if requested:
            if not set(requested.split()) <= set(grant.scope.split()):
                raise _TokenError("invalid_scope", "scope exceeds the original grant")
            scope = requested
        refresh: str | None
        if self.omit_refresh_token_on_refresh:
            refresh = None
        elif self.rotate_refresh_tokens:
            rec.rotated = True
            refresh = self._new_refresh(rec.grant_id, client)
        else:
            refresh = token
        self._counters["refresh_count"] += 1
        return self._token_payload(rec.grant_id, client, scope, refresh)

    def _new_refresh(self, grant_id: str, client: _Client) -> str:
        token = "rt_" + secrets.token_urlsafe(32)
        self._refresh[token] = _RefreshToken(grant_id, client.client_id)
        return token

    def _token_payload(
        self, grant_id: str, client: _Client, scope: str, refresh: str | None
    ) -> dict[str, Any]:
        access = "at_" + secrets.token_urlsafe(32)
        expires_in = self._expires_in
        expires_at = time.time() + expires_in if expires_in is not None else None
        self._access[access] = _AccessToken(grant_id, client.client_id, scope, expires_at)
        self._last_access_token = access
        payload: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
        if expires_in is not None:
            payload["expires_in"] = expires_in
        if refresh is not None:
            payload["refresh_token"] = refresh
        payload["scope"] = scope
        return payload

    # /register ------------------------------------------------------------------

    def _register(self, body: bytes) -> _Response:
        try:
            metadata = self._register_client(body)
        except _TokenError as exc:
            return _json_response(
                exc.status, {"error": exc.error, "error_description": exc.description}
            )
        return _json_response(201, self._client_document(metadata["client_id"]))

    def _client_document(self, client_id: str) -> dict[str, Any]:
        """The registration response (RFC 7591 3.2.1, RFC 7592 3) of a registered client."""
        with self._lock:
            client = self._clients[client_id]
        response = dict(client.metadata)
        if client.client_secret is not None:
            response["client_secret"] = client.client_secret
            response["client_secret_expires_at"] = 0
        if client.registration_access_token is not None:
            response["registration_client_uri"] = f"{self.registration_endpoint}/{client_id}"
            response["registration_access_token"] = client.registration_access_token
        return response

    def _client_configuration(self, client_id: str, headers: Mapping[str, str]) -> _Response:
        """RFC 7592 2.1 read: ``200`` and the registration for its bearer token, else ``401``
        (also for a client the server does not know, or forgot)."""
        with self._lock:
            self._counters["client_configuration_requests"] += 1
            client = self._clients.get(unquote_plus(client_id))
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        expected = None if client is None else client.registration_access_token
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not secrets.compare_digest(token.strip().encode(), expected.encode())
        ):
            return _json_response(
                401,
                {"error": "invalid_token", "error_description": "unknown client or token"},
                ("WWW-Authenticate", f'Bearer realm="{_REALM}", error="invalid_token"'),
            )
        assert client is not None
        if self.rotate_on_configuration_read:
            with self._lock:
                client.registration_access_token = "rat_" + secrets.token_urlsafe(32)
                if client.client_secret is not None:
                    client.client_secret = "cs_" + secrets.token_urlsafe(32)
        return _json_response(200, self._client_document(client.client_id))

    def _register_client(self, body: bytes) -> dict[str, Any]:
        try:
            raw = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise _TokenError("invalid_client_metadata", "body must be a JSON object") from None
        if not isinstance(raw, dict):
            raise _TokenError("invalid_client_metadata", "body must be a JSON object")
        meta: dict[str, Any] = raw
        uris = meta.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise _TokenError("invalid_redirect_uri", "redirect_uris must be a non-empty list")
        for uri in uris:
            parts = urlsplit(uri)
            if not parts.scheme or "#" in uri:
                raise _TokenError("invalid_redirect_uri", "redirect URIs must be absolute")
            if parts.scheme == "http" and not _is_loopback(uri):
                raise _TokenError("invalid_redirect_uri", "http is only allowed for loopback")
        method = meta.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in _AUTH_METHODS:
            raise _TokenError("invalid_client_metadata", "unsupported token_endpoint_auth_method")
        grant_types = meta.get("grant_types", ["authorization_code"])
        if not isinstance(grant_types, list) or not set(grant_types) <= set(_GRANT_TYPES):
            raise _TokenError("invalid_client_metadata", "unsupported grant_types")
        response_types = meta.get("response_types", ["code"])
        if not isinstance(response_types, list) or not set(response_types) <= {"code"}:
            raise _TokenError("invalid_client_metadata", "unsupported response_types")
        client_id = "dcr_" + secrets.token_urlsafe(12)
        secret = None if method == "none" else "cs_" + secrets.token_urlsafe(32)
        echoed = {
            **meta,
            "client_id": client_id,
            "client_id_issued_at": int(time.time()),
            "redirect_uris": list(uris),
            "token_endpoint_auth_method": method,
            "grant_types": list(grant_types),
            "response_types": list(response_types),
        }
        token = "rat_" + secrets.token_urlsafe(32) if self.client_configuration else None
        with self._lock:
            self._clients[client_id] = _Client(
                client_id, secret, tuple(uris), echoed, registration_access_token=token
            )
            self._counters["registrations"] += 1
        return echoed

    # /userinfo ------------------------------------------------------------------

    def _userinfo(self, headers: Mapping[str, str]) -> _Response:
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _json_response(
                401,
                {"error": "invalid_token", "error_description": "Bearer token required"},
                ("WWW-Authenticate", f'Bearer realm="{_REALM}", error="invalid_token"'),
            )
        with self._lock:
            rec = self._access.get(token)
            active = self.is_access_token_active(token)
        if rec is None or not active:
            return _json_response(
                401,
                {"error": "invalid_token", "error_description": "unknown, expired or revoked"},
                ("WWW-Authenticate", f'Bearer realm="{_REALM}", error="invalid_token"'),
            )
        with self._lock:
            self._counters["userinfo_requests"] += 1
            subject = self._grants[rec.grant_id].subject or self.subject
            claims = dict(self._users.get(subject, {}))
        return _json_response(
            200, {**claims, "sub": subject, "client_id": rec.client_id, "scope": rec.scope}
        )

    # ------------------------------------------------------------------ machine to machine
    # The client_credentials grant (RFC 6749 4.4), private_key_jwt (RFC 7523),
    # the auth-method restriction, and what a resource server in a test needs.

    def register_machine_client(
        self,
        *,
        scope: str = "read write",
        public_key: str | bytes | None = None,
    ) -> tuple[str, str | None]:
        """Register a client for the ``client_credentials`` grant (no HTTP, not
        counted); returns ``(client_id, secret)``.

        Without *public_key* the client authenticates with a secret (Basic or
        form, as *auth_methods* allows). With *public_key* (a PEM public key, EC
        or RSA) it authenticates with ``private_key_jwt`` only and the secret is
        ``None``. *scope* is what the grant may give (and gives when the
        request names none).
        """
        client_id = "m2m_" + secrets.token_urlsafe(12)
        pem = public_key.decode("ascii") if isinstance(public_key, bytes) else public_key
        secret = None if pem is not None else "cs_" + secrets.token_urlsafe(32)
        client = _Client(client_id, secret, (), machine_scope=scope, public_key=pem)
        with self._lock:
            self._clients[client_id] = client
        return client_id, secret

    client_credentials_count = _counter("Successful ``client_credentials`` grants.")

    @property
    def assertion_failures(self) -> list[str]:
        """Why each rejected ``private_key_jwt`` assertion was rejected, in order
        (``signature``, ``aud``, ``exp``, ``jti``, ...)."""
        with self._lock:
            return list(self._assertion_failures)

    @property
    def last_access_token(self) -> str | None:
        """The access token issued last (by any grant), ``None`` before the first."""
        with self._lock:
            return self._last_access_token

    def access_token_info(self, token: str) -> dict[str, Any] | None:
        """RFC 7662-like facts about an active access token (``client_id``,
        ``scope``, ``exp``), or ``None`` for an unknown, expired or revoked one."""
        with self._lock:
            rec = self._access.get(token)
            if rec is None or not self.is_access_token_active(token):
                return None
            return {"active": True, "client_id": rec.client_id, "scope": rec.scope,
                    "exp": rec.expires_at}

    def revoke_access_token(self, token: str) -> None:
        """Make one access token invalid (its grant and refresh token stay)."""
        with self._lock:
            rec = self._access.get(token)
            if rec is not None:
                rec.expires_at = time.time() - 1

    def _check_auth_method(self, method: str) -> None:
        if method not in self.auth_methods:
            raise _TokenError(
                "invalid_client", f"client authentication method {method} not supported", 401
            )

    def _authenticate_assertion(
        self, form: Mapping[str, str], authorization: str | None
    ) -> _Client:
        """``private_key_jwt`` (RFC 7523 2.2, 3); the caller holds the lock."""
        self._check_auth_method("private_key_jwt")
        if authorization or "client_secret" in form:
            raise _TokenError("invalid_request", "more than one client authentication method")
        if form.get("client_assertion_type") != _JWT_BEARER:
            raise _TokenError("invalid_client", "unsupported client_assertion_type", 401)
        assertion = form.get("client_assertion")
        if not assertion:
            raise _TokenError("invalid_client", "client_assertion is required", 401)
        try:
            return self._verify_assertion(assertion, form.get("client_id"))
        except _TokenError as exc:
            self._assertion_failures.append(exc.description.split(":")[0])
            raise

    def _verify_assertion(self, assertion: str, form_client_id: str | None) -> _Client:
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import ECKey, RSAKey

        def reject(reason: str) -> _TokenError:
            return _TokenError("invalid_client", f"{reason}: client assertion rejected", 401)

        try:
            unverified = json.loads(
                base64.urlsafe_b64decode(assertion.split(".")[1] + "==").decode("utf-8")
            )
        except (ValueError, IndexError, UnicodeDecodeError):
            raise reject("malformed") from None
        client_id = unverified.get("iss") if isinstance(unverified, dict) else None
        client = self._clients.get(client_id) if isinstance(client_id, str) else None
        if client is None or client.public_key is None:
            raise reject("iss")
        if form_client_id is not None and form_client_id != client.client_id:
            raise reject("client_id")
        key: ECKey | RSAKey
        try:
            key = ECKey.import_key(client.public_key)
            algorithms = ["ES256", "ES384"]
        except (JoseError, ValueError, TypeError):
            key = RSAKey.import_key(client.public_key)
            algorithms = ["RS256", "PS256"]
        try:
            token = jwt.decode(assertion, key, algorithms=algorithms)
        except JoseError:
            raise reject("signature") from None
        claims = token.claims
        now = time.time()
        if claims.get("sub") != client.client_id:
            raise reject("sub")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.token_endpoint not in audiences and self.issuer not in audiences:
            raise reject("aud")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= now or exp > now + _MAX_ASSERTION_LIFETIME:
            raise reject("exp")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise reject("jti")
        self._seen_jti = {j: t for j, t in self._seen_jti.items() if t > now}
        if jti in self._seen_jti:
            raise reject("jti")
        self._seen_jti[jti] = float(exp)
        return client

    def _grant_client_credentials(
        self, client: _Client, form: Mapping[str, str]
    ) -> dict[str, Any]:
        """RFC 6749 4.4: an access token, no refresh token; the caller holds the lock."""
        if client.machine_scope is None:
            raise _TokenError(
                "unauthorized_client", "this client may not use the client_credentials grant"
            )
        requested = form.get("scope")
        if requested and not set(requested.split()) <= set(client.machine_scope.split()):
            raise _TokenError("invalid_scope", "scope exceeds what the client may have")
        scope = requested or client.machine_scope
        grant_id = secrets.token_hex(8)
        self._grants[grant_id] = _Grant(client.client_id, scope)
        self._counters["client_credentials_count"] += 1
        return self._token_payload(grant_id, client, scope, None)

    # ------------------------------------------------------------------ device flow (RFC 8628)
    #
    # The device authorization endpoint, the ``/device`` verification page, the
    # ``device_code`` grant, their knobs, counters and records. Kept together.

    def _init_device(self) -> None:
        #: Whether the device flow is served and advertised in the metadata.
        self.device_flow = True
        #: ``interval`` answered by the device authorization endpoint (RFC 8628 3.2).
        self.device_interval: float = 1
        #: ``expires_in`` of new device codes, seconds.
        self.device_expires_in: float = 600
        #: Answer ``slow_down`` to a poll that comes sooner than the interval
        #: after the previous one (and add 5 s to that code's interval, RFC 8628 3.5).
        self.enforce_device_interval = True
        self._device_codes: dict[str, _DeviceCode] = {}
        self._user_codes: dict[str, str] = {}  # normalised user code -> device code
        self._device_requests: list[dict[str, str]] = []
        self._device_request_times: list[float] = []
        self._device_polls: list[DevicePoll] = []
        self._slow_down_remaining = 0

    device_authorization_endpoint = _endpoint(
        "/device_authorization", "``{issuer}/device_authorization``."
    )

    verification_uri = _endpoint(
        "/device", "``{issuer}/device``: the page where the user code is entered."
    )

    def _device_metadata(self) -> dict[str, Any]:
        if not self.device_flow:
            return {}
        return {"device_authorization_endpoint": self.device_authorization_endpoint}

    def slow_down_next_polls(self, n: int) -> None:
        """Answer ``slow_down`` to the next *n* polls of a pending device code
        (each adds 5 s to that code's interval, as RFC 8628 3.5 has the client do)."""
        with self._lock:
            self._slow_down_remaining = n

    @staticmethod
    def _normalise_user_code(user_code: str) -> str:
        return "".join(ch for ch in user_code.upper() if ch.isalnum())

    def _device_decide(self, user_code: str, status: str) -> bool:
        with self._lock:
            device_code = self._user_codes.get(self._normalise_user_code(user_code))
            rec = self._device_codes.get(device_code) if device_code else None
            if rec is None or rec.status != "pending" or rec.expires_at <= time.time():
                return False
            rec.status = status
            rec.subject = self.approving_user
            self._counters["device_approvals" if status == "approved" else "device_denials"] += 1
            return True

    def approve_device(self, user_code: str) -> bool:
        """Approve the pending device code with *user_code* (case, dashes and
        spaces ignored), as :attr:`approving_user` would on the ``/device``
        page. False when no pending, unexpired code has it."""
        return self._device_decide(user_code, "approved")

    def deny_device(self, user_code: str) -> bool:
        """Deny the pending device code with *user_code*; see :meth:`approve_device`."""
        return self._device_decide(user_code, "denied")

    def expire_device_codes(self) -> None:
        """Make every device code issued so far expired (polls answer ``expired_token``)."""
        with self._lock:
            past = time.time() - 1
            for rec in self._device_codes.values():
                rec.expires_at = past

    @property
    def user_codes(self) -> list[str]:
        """The user codes issued so far, oldest first."""
        with self._lock:
            return [rec.user_code for rec in self._device_codes.values()]

    @property
    def device_authorization_requests(self) -> list[dict[str, str]]:
        """The form fields of every ``POST /device_authorization``, in order."""
        with self._lock:
            return [dict(r) for r in self._device_requests]

    @property
    def device_authorization_times(self) -> list[float]:
        """``time.monotonic()`` at the arrival of each ``POST /device_authorization``."""
        with self._lock:
            return list(self._device_request_times)

    @property
    def device_polls(self) -> list[DevicePoll]:
        """Every device-grant poll of ``/token``, in order, with its arrival time."""
        with self._lock:
            return list(self._device_polls)

    def _device_authorization(self, headers: Mapping[str, str], body: bytes) -> _Response:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            form = _parse_params(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            form = None
        arrived = time.monotonic()
        with self._lock:
            self._device_requests.append(dict(form or {}))
            self._device_request_times.append(arrived)
            self._counters["device_authorizations"] += 1
        try:
            if form is None or (body and content_type != "application/x-www-form-urlencoded"):
                raise _TokenError("invalid_request", "body must be a form")
            with self._lock:
                client = self._authenticate(form, headers.get("authorization"))
            scope = form.get("scope") or _DEFAULT_SCOPE
            if not set(scope.split()) <= set(_SCOPES_SUPPORTED):
                raise _TokenError("invalid_scope", "unknown scope")
        except _TokenError as exc:
            extra = [("WWW-Authenticate", f'Basic realm="{_REALM}"')] if exc.status == 401 else []
            return _json_response(
                exc.status, {"error": exc.error, "error_description": exc.description}, *extra
            )
        alphabet = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 6.1: no vowels, no look-alikes
        with self._lock:
            while True:
                raw = "".join(secrets.choice(alphabet) for _ in range(8))
                if raw not in self._user_codes:
                    break
            user_code = f"{raw[:4]}-{raw[4:]}"
            device_code = "dc_" + secrets.token_urlsafe(32)
            interval, lifetime = self.device_interval, self.device_expires_in
            self._device_codes[device_code] = _DeviceCode(
                client.client_id, user_code, scope, time.time() + lifetime, interval
            )
            self._user_codes[raw] = device_code
        payload: dict[str, Any] = {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": _with_params(
                self.verification_uri, [("user_code", user_code)]
            ),
            "expires_in": lifetime,
            "interval": interval,
        }
        return _json_response(200, payload)

    def _grant_device(self, client: _Client, form: Mapping[str, str]) -> dict[str, Any]:
        """The ``device_code`` grant (RFC 8628 3.4, 3.5); the caller holds the lock."""
        device_code = form.get("device_code")
        if not device_code:
            raise _TokenError("invalid_request", "device_code is required")
        rec = self._device_codes.get(device_code)
        if rec is None or rec.client_id != client.client_id:
            raise _TokenError("invalid_grant", "unknown device code")
        now = time.monotonic()
        previous, rec.last_poll = rec.last_poll, now
        if rec.status == "issued":
            raise _TokenError("invalid_grant", "device code already used")
        if rec.expires_at <= time.time():
            raise _TokenError("expired_token", "the device code has expired")
        if rec.status == "denied":
            raise _TokenError("access_denied", "the user denied the request")
        too_fast = previous is not None and now - previous < rec.interval
        if too_fast:
            self._counters["device_polls_too_fast"] += 1
        punished = too_fast and self.enforce_device_interval
        forced = not punished and self._slow_down_remaining > 0
        if rec.status == "pending" and (punished or forced):
            if forced:
                self._slow_down_remaining -= 1
            rec.interval += 5
            self._counters["device_slow_downs"] += 1
            raise _TokenError("slow_down", "polling too fast; add 5 seconds to the interval")
        if rec.status == "pending":
            raise _TokenError("authorization_pending", "the user has not answered yet")
        rec.status = "issued"
        grant_id = secrets.token_hex(8)
        self._grants[grant_id] = _Grant(client.client_id, rec.scope, subject=rec.subject)
        refresh = self._new_refresh(grant_id, client) if self.issue_refresh_token else None
        payload = self._token_payload(grant_id, client, rec.scope, refresh)
        if "openid" in rec.scope.split():  # no nonce: the device flow has no front channel
            payload["id_token"] = self._id_token(client.client_id, rec.subject, None)
        return payload

    def _record_device_poll(
        self, arrived: float, form: Mapping[str, str], response: _Response
    ) -> None:
        answer = "tokens" if response.status == 200 else f"HTTP {response.status}"
        with contextlib.suppress(ValueError, AttributeError):
            error = json.loads(response.body).get("error")
            if isinstance(error, str) and response.status == 400:
                answer = error
        with self._lock:
            rec = self._device_codes.get(form.get("device_code", ""))
            interval = rec.interval if rec is not None else 0.0
            if answer == "slow_down":
                interval -= 5  # the interval in force before this poll
            self._device_polls.append(DevicePoll(arrived, answer, interval))
            self._counters["device_polls"] += 1

    def _device_form(self, user_code: str, message: str = "") -> str:
        esc = html.escape
        note = f"<p><b>{esc(message)}</b></p>" if message else ""
        return (
            "<h1>Connect a device</h1>"
            f"{note}<p>Enter the code shown on your device.</p>"
            "<form method='post' action='/device'>"
            "<label for='user_code'>Code</label> "
            f"<input id='user_code' name='user_code' value='{esc(user_code)}' "
            "autocomplete='off' autocapitalize='characters' spellcheck='false'> "
            "<button type='submit' name='action' value='approve'>Approve</button> "
            "<button type='submit' name='action' value='deny'>Deny</button>"
            "</form>"
        )

    def _device_page(self, query: str) -> _Response:
        try:
            params = _parse_params(query)
        except ValueError as exc:
            return _error_page(str(exc))
        form = self._device_form(params.get("user_code", ""))
        return _html_response(200, "Connect a device", form)

    def _device_post(self, body: bytes) -> _Response:
        try:
            form = _parse_params(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return _error_page("malformed form")
        user_code = form.get("user_code", "")
        action = form.get("action")
        if action not in ("approve", "deny"):
            return _html_response(
                400, "Connect a device", self._device_form(user_code, "Choose approve or deny.")
            )
        if not self._device_decide(user_code, "approved" if action == "approve" else "denied"):
            return _html_response(
                400,
                "Connect a device",
                self._device_form(user_code, "That code is unknown, expired or already used."),
            )
        if action == "approve":
            return _html_response(
                200,
                "Device connected",
                "<h1>Device connected</h1><p>You can return to your device.</p>",
            )
        return _html_response(
            200, "Access denied", "<h1>Access denied</h1><p>The device was not connected.</p>"
        )

    # ------------------------------------------------------------------ accounts (OIDC, revocation)
    # Users, ID Tokens signed with a rotating key set (/jwks), and RFC 7009
    # revocation (/revoke). Kept apart from the rest so other extensions merge cleanly.

    def _init_accounts(self) -> None:
        self._users: dict[str, dict[str, str]] = {self.subject: {}}
        self._approver = self.subject
        self._signing_keys: list[Any] = []  # joserfc RSAKey, newest last; all published
        self._next_id_token_claims: dict[str, Any] | None = None
        self._next_id_token_forged = False
        self._revocation_fail_remaining = 0
        self._revocation_fail_status = 503
        self.id_token_lifetime = 600

    def _account_metadata(self) -> dict[str, Any]:
        return {
            "jwks_uri": self.jwks_uri,
            "revocation_endpoint": self.revocation_endpoint,
            "revocation_endpoint_auth_methods_supported": list(_AUTH_METHODS),
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
        }

    jwks_uri = _endpoint("/jwks", "``{issuer}/jwks``: the JWK Set that signs ID Tokens.")

    revocation_endpoint = _endpoint("/revoke", "``{issuer}/revoke`` (RFC 7009).")

    def add_user(
        self,
        sub: str,
        *,
        email: str | None = None,
        name: str | None = None,
        preferred_username: str | None = None,
    ) -> None:
        """Add (or update) a user; its claims go into ID Tokens and ``/userinfo``.

        Also sets the claims of the first user (``subject``) when ``sub`` names it.
        """
        claims = {"email": email, "name": name, "preferred_username": preferred_username}
        with self._lock:
            self._users[sub] = {k: v for k, v in claims.items() if v is not None}

    @property
    def approving_user(self) -> str:
        """The ``sub`` of the user who approves the next authorizations (default ``subject``)."""
        with self._lock:
            return self._approver

    @approving_user.setter
    def approving_user(self, sub: str) -> None:
        with self._lock:
            if sub not in self._users:
                raise KeyError(f"no user {sub!r}; add it with add_user()")
            self._approver = sub

    def rotate_signing_key(self, *, keep_old: bool = True) -> str:
        """Sign ID Tokens from now on with a new key; returns its ``kid``.

        With ``keep_old`` the previous keys stay published at ``/jwks`` (a
        graceful rotation); without, only the new key is published, so tokens
        signed before no longer verify.
        """
        from joserfc.jwk import RSAKey

        key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
        with self._lock:
            self._signing_keys = [*self._signing_keys, key] if keep_old else [key]
        return str(key.kid)

    @property
    def signing_kid(self) -> str:
        """The ``kid`` ID Tokens are signed with now (generates the first key)."""
        return str(self._current_key().kid)

    def _current_key(self) -> Any:
        with self._lock:
            if not self._signing_keys:
                self.rotate_signing_key()
            return self._signing_keys[-1]

    def alter_next_id_token(self, **claims: Any) -> None:
        """One-shot: merge ``claims`` into the next ID Token (``None`` removes a claim).

        E.g. ``nonce="other"``, ``exp=0``, ``aud="someone-else"``, ``iss=None``.
        """
        with self._lock:
            self._next_id_token_claims = dict(claims)

    def forge_next_id_token(self) -> None:
        """One-shot: sign the next ID Token with a key that is not published, under the
        ``kid`` of the published one (what a forger without the private key can do)."""
        with self._lock:
            self._next_id_token_forged = True

    def make_id_token(
        self, client_id: str, subject: str | None = None, nonce: str | None = None,
        **claims: Any,
    ) -> str:
        """An ID Token as ``/token`` would issue it (for tests that need one directly)."""
        with self._lock:
            return self._id_token(client_id, subject, nonce, claims)

    def _id_token(
        self, client_id: str, subject: str | None, nonce: str | None,
        more: Mapping[str, Any] | None = None,
    ) -> str:
        """Build and sign an ID Token; the caller holds the lock."""
        from joserfc import jwt
        from joserfc.jwk import RSAKey

        sub = subject or self.subject
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": client_id,
            "iat": now,
            "auth_time": now,
            "exp": now + self.id_token_lifetime,
            **self._users.get(sub, {}),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        overrides, self._next_id_token_claims = self._next_id_token_claims, None
        for name, value in {**(overrides or {}), **(more or {})}.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = self._current_key()
        forged, self._next_id_token_forged = self._next_id_token_forged, False
        if forged:
            key = RSAKey.generate_key(2048, parameters={"kid": str(key.kid)})
        return jwt.encode({"alg": "RS256", "kid": str(key.kid)}, claims, key,
                          algorithms=["RS256"])

    def _jwks(self) -> _Response:
        self._current_key()
        with self._lock:
            self._counters["jwks_requests"] += 1
            keys = [k.as_dict(private=False) for k in self._signing_keys]
        return _json_response(200, {"keys": keys})

    jwks_requests = _counter("``GET /jwks`` requests.")

    revocations = _counter(
        "Tokens revoked by ``POST /revoke`` (known tokens of the requesting client)."
    )

    revocation_requests = _counter(
        "``POST /revoke`` requests, including failed and injected-failure ones."
    )

    userinfo_requests = _counter("``GET /userinfo`` (or ``/me``) requests answered with claims.")

    def fail_next_revocations(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` ``POST /revoke`` with ``status`` (an RFC 6749 error JSON)."""
        with self._lock:
            self._revocation_fail_remaining = n
            self._revocation_fail_status = status

    def _revoke(self, headers: Mapping[str, str], body: bytes) -> _Response:
        with self._lock:
            self._counters["revocation_requests"] += 1
            failing = self._revocation_fail_remaining > 0
            if failing:
                self._revocation_fail_remaining -= 1
            status = self._revocation_fail_status
        if failing:
            error = "temporarily_unavailable" if status == 503 else "server_error"
            return _json_response(status, {"error": error, "error_description": "injected"})
        try:
            form = _parse_params(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return _json_response(400, {"error": "invalid_request",
                                        "error_description": "malformed form"})
        try:
            with self._lock:
                client = self._authenticate(form, headers.get("authorization"))
                token = form.get("token")
                if not token:
                    raise _TokenError("invalid_request", "token is required")
                self._revoke_token(client, token)
        except _TokenError as exc:
            extra = [("WWW-Authenticate", f'Basic realm="{_REALM}"')] if exc.status == 401 else []
            return _json_response(
                exc.status, {"error": exc.error, "error_description": exc.description}, *extra
            )
        # RFC 7009 2.2: 200 whether or not the token was valid.
        return _Response(200, b"", [("Cache-Control", "no-store")])

    def _revoke_token(self, client: _Client, token: str) -> None:
        """Revoke a refresh token (its whole grant) or one access token; the caller
        holds the lock. Unknown tokens and other clients' tokens are left alone."""
        refresh = self._refresh.get(token)
        if refresh is not None and refresh.client_id == client.client_id:
            self._grants[refresh.grant_id].revoked = True
            self._counters["revocations"] += 1
            return
        access = self._access.get(token)
        if access is not None and access.client_id == client.client_id and not access.revoked:
            access.revoked = True
            self._counters["revocations"] += 1


# --------------------------------------------------------------------------- headless browser


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def follow_redirects(url: str, *, timeout: float = 10.0, max_redirects: int = 10) -> int:
    """A headless browser for an auto-approving provider: ``GET`` *url*, follow every
    redirect (to the loopback callback) and return the final response's status.

    It uses :mod:`http.client`, which logs nothing: an HTTP client library would
    log each URL (the callback's with its ``code`` and ``state``) and the
    ``Location`` headers at INFO/DEBUG. Raises :class:`RuntimeError` after
    *max_redirects* redirects.
    """
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("follow_redirects needs an absolute http(s) URL")
        factory = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = factory(parts.hostname, parts.port, timeout=timeout)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            location = response.getheader("Location")
            status = response.status
        finally:
            conn.close()
        if status not in _REDIRECTS or not location:
            return status
        url = urljoin(url, location)
    raise RuntimeError(f"more than {max_redirects} redirects")
