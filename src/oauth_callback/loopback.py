"""Capture an OAuth authorization code on a loopback redirect URI (RFC 8252 7.3).

:class:`CallbackServer` is a small stdlib HTTP server that binds only to
loopback, serves every connection from one event-driven thread with a deadline
per connection (:mod:`oauth_callback._connections`), and completes on the
first ``GET`` to exactly the callback path whose ``Host`` header names the
loopback address and port it serves and whose ``state`` is the expected one
(a callback with a wrong or missing state is answered and ignored). :func:`get_auth_code` and
:func:`get_auth_code_async` wrap it for a fixed port. Its pages are in
:mod:`oauth_callback.pages`; :func:`open_url` (from :mod:`oauth_callback.browser`,
re-exported here) opens the authorization URL or prints it when no browser is
available.

Nothing secret (authorization code, ``state``) is logged, put in an exception
message or shown in a ``repr``.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import parse_qsl

from ._connections import ConnectionLoop, Reply, fd_budget
from ._log import get_logger
from .browser import OpenBrowser, no_graphical_display, open_url, open_url_async
from .errors import (
    CallbackCancelled,
    CallbackError,
    CallbackTimeout,
    InsecureHostError,
    OAuthError,
    OAuthStateError,
    PortInUseError,
)
from .pages import DEFAULT_SUCCESS_HTML, render_error, status_page
from .protocol import CallbackProblem, CallbackResult, callback_problem

__all__ = [
    "CallbackResult",
    "CallbackServer",
    "LoopbackOptions",
    "OpenBrowser",
    "RequestInfo",
    "get_auth_code",
    "get_auth_code_async",
    "no_graphical_display",
    "open_url",
    "open_url_async",
]

logger = get_logger("oauth_callback.loopback")

_REDACTED = "<redacted>"
_POLL_INTERVAL = 0.05  # seconds between checks of a ``cancel`` event
_MAX_CONNECTIONS = 1024  # open connections held; a newcomer closes the oldest (_connections)
_MAX_HEAD = 65536  # request line and headers; more is answered 431
_LISTEN_BACKLOG = 128
_BIND_ATTEMPTS = 10  # port=0 on two families: tries to find a port free on both
_MAX_QUERY_FIELDS = 200

_SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Connection", "close"),
)

# Header values redacted in RequestInfo when redact_query is on.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_URL_HEADERS = frozenset({"referer", "origin"})


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RequestInfo:
    """One request the callback server received, as given to ``on_request``.

    ``path`` is the request target; unless the server was created with
    ``redact_query=False`` every query value is replaced by ``<redacted>``, and
    so are ``Authorization``/``Cookie`` values and the query of ``Referer``/
    ``Origin``. ``headers`` has lower-cased names.
    """

    method: str
    path: str
    headers: Mapping[str, str]


# --------------------------------------------------------------------------- helpers


def _redact_url(target: str) -> str:
    """``target`` with every query value replaced by ``<redacted>`` (fragment dropped)."""
    base, sep, query = target.partition("?")
    base = base.partition("#")[0]
    if not sep:
        return base
    query = query.partition("#")[0]
    names = [piece.partition("=")[0] for piece in query.split("&") if piece]
    return base + "?" + "&".join(f"{name}={_REDACTED}" for name in names)


def _is_in_use(exc: OSError) -> bool:
    winerror = getattr(exc, "winerror", None)
    return exc.errno == errno.EADDRINUSE or winerror in (10048, 10013)


def _is_unavailable(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)


def _listen(family: socket.AddressFamily, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "nt":  # SO_REUSEADDR on Windows would allow port hijacking
            exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
            if exclusive is not None:
                sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        else:  # rebind a fixed port despite TIME_WAIT from a previous run
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_all(
    targets: list[tuple[socket.AddressFamily, str]], port: int, host: str
) -> tuple[list[socket.socket], int]:
    """Listen on every target with one common port; skip families this machine lacks."""
    attempts = _BIND_ATTEMPTS if port == 0 and len(targets) > 1 else 1
    for _ in range(attempts):
        bound: list[socket.socket] = []
        chosen = port
        retry = False
        try:
            for family, address in targets:
                try:
                    bound.append(_listen(family, address, chosen))
                except OSError as exc:
                    if _is_in_use(exc):
                        if port == 0 and bound:
                            retry = True  # the other family holds this port: pick again
                            break
                        raise PortInUseError(chosen, host) from None
                    if _is_unavailable(exc) and len(targets) > 1:
                        logger.debug("loopback %s unavailable, not listening on it", address)
                        continue
                    raise CallbackError(
                        f"cannot listen on {address} port {chosen} for {host}: "
                        f"[Errno {exc.errno}] {exc.strerror}"
                        + (" (ports below 1024 need privileges; use port=0)"
                           if isinstance(exc, PermissionError) and 0 < chosen < 1024 else "")
                    ) from exc
                if chosen == 0:
                    chosen = cast(int, bound[-1].getsockname()[1])
        except BaseException:
            for sock in bound:
                sock.close()
            raise
        if retry:
            for sock in bound:
                sock.close()
            continue
        if not bound:
            raise CallbackError(f"no loopback address is available to listen on for {host}")
        return bound, chosen
    raise PortInUseError(port, host)


def _resolve_host(
    host: str, allow_non_loopback: bool
) -> tuple[list[tuple[socket.AddressFamily, str]], str, bool]:
    """Return ``(bind targets, host for the redirect URI, is_loopback)`` for ``host``."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare.lower() == "localhost":
        return [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], "localhost", True
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        uri_host = str(ip) if ip.version == 4 else f"[{ip}]"
        return [(family, str(ip))], uri_host, True
    if not allow_non_loopback:
        raise InsecureHostError(
            f"refusing to serve the OAuth callback on non-loopback host {host!r}: anyone who "
            "can reach it could deliver or intercept the authorization code; use 'localhost', "
            "'127.0.0.1' or '::1', or pass allow_non_loopback=True (e.g. inside a container)"
        )
    if ip is not None:
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        if ip.is_unspecified:
            return [(family, str(ip))], "localhost", False
        return [(family, str(ip))], (str(ip) if ip.version == 4 else f"[{ip}]"), False
    infos = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return [(family, str(sockaddr[0]))], bare, False


def _query_params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS):
        params.setdefault(name, value)  # first value wins (no parameter pollution)
    return params


@dataclass(frozen=True)
class _Outcome:
    result: CallbackResult | None
    error: CallbackProblem | None
    ignored: bool = False  # a forged callback: shown an error page, the wait goes on


def _evaluate(params: Mapping[str, str], expected_state: str | None) -> _Outcome:
    """The server's use of the one callback check
    (:func:`~oauth_callback.protocol.callback_problem`): the result, or what is wrong."""
    result = CallbackResult.from_params(params)
    problem = callback_problem(result, expected_state)
    return _Outcome(None if problem is not None else result, problem)


# --------------------------------------------------------------------------- handler


class _Handler(BaseHTTPRequestHandler):
    """Answers one request head for a :class:`CallbackServer`, without I/O.

    The connection loop (:mod:`oauth_callback._connections`) reads the head and
    sends :attr:`response`; the stdlib does the parsing.
    """

    server_version = "oauth-callback"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def __init__(
        self,
        head: bytes,
        client_address: Any,
        owner: CallbackServer,
        claim: list[dict[str, str]],
    ) -> None:
        self.owner = owner
        self.claim = claim
        self._head = head
        super().__init__(cast(Any, None), client_address, cast(Any, owner))

    def setup(self) -> None:
        self.rfile = io.BytesIO(self._head)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        return

    @property
    def response(self) -> bytes:
        return cast(io.BytesIO, self.wfile).getvalue()

    @property
    def _target(self) -> str:
        """The request target as sent: the stdlib collapses leading slashes in
        ``self.path`` (``//callback`` becomes ``/callback``); only the exact
        callback path may complete the flow."""
        words = getattr(self, "raw_requestline", b"").decode("iso-8859-1").split()
        return words[1] if len(words) >= 2 else ""

    def version_string(self) -> str:
        return self.server_version

    # -- silence the stdlib's stderr logging (it would print the query string)
    def log_message(self, format: str, *args: Any) -> None:
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    # -- responses
    def _respond(self, status: int, body: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        payload = body.encode("utf-8")
        self.send_response(status)
        for name, value in (*_SECURITY_HEADERS, *extra):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()
        self.close_connection = True
        logger.debug(
            "%s %s -> %d",
            self.command or "-",
            _redact_url(self._target) or "-",
            status,
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed or unsupported requests: our page and headers, never the stdlib's.

        The stdlib's ``message`` can quote the request line (and so a code); it is
        replaced by the standard reason phrase.
        """
        message = self.responses.get(code, ("Error",))[0]
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # always send a status line and headers
        self._respond(code, status_page(code, message))

    # -- dispatch
    def _dispatch(self) -> None:
        owner = self.owner
        self._notify_on_request()
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            self.send_error(400, "Bad Request")
            return
        if hosts[0].strip().lower() not in owner._allowed_hosts:
            # DNS rebinding: a page on another origin resolved to 127.0.0.1.
            self.send_error(421, "Misdirected Request")
            return
        target = self._target
        if not target.startswith("/"):
            self.send_error(400, "Bad Request")
            return
        path, _, query = target.partition("?")
        if path != owner.callback_path:
            self.send_error(404, "Not Found")
            return
        if self.command != "GET":
            self._respond(405, status_page(405, "Method Not Allowed"), (("Allow", "GET"),))
            return
        try:
            params = _query_params(query.partition("#")[0])
        except ValueError:
            self.send_error(400, "Bad Request")
            return
        outcome = owner._claim(params)
        if outcome is None:
            self._respond(409, status_page(409, "Authorization already completed"))
            return
        if not outcome.ignored:
            self.claim.append(params)
        if outcome.error is None:
            self._respond(200, owner._success_html)
        elif isinstance(outcome.error, OAuthError):
            err = outcome.error
            self._respond(400, owner._render_error(err.error, err.description, err.uri))
        else:
            self._respond(
                400,
                owner._render_error(
                    "state_mismatch",
                    "This response does not belong to the sign-in this application started. "
                    "Start the sign-in again from the application.",
                    None,
                ),
            )

    def _notify_on_request(self) -> None:
        callback = self.owner._on_request
        if callback is None:
            return
        redact = self.owner._redact_query
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            if redact and key in _SECRET_HEADERS:
                value = _REDACTED
            elif redact and key in _URL_HEADERS:
                value = _redact_url(value)
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        info = RequestInfo(
            method=self.command,
            path=_redact_url(self._target) if redact else self._target,
            headers=MappingProxyType(headers),
        )
        try:
            callback(info)
        except Exception as exc:
            logger.warning("on_request callback raised %s; ignored", type(exc).__name__)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch
    do_OPTIONS = do_TRACE = do_CONNECT = _dispatch


# --------------------------------------------------------------------------- server


class CallbackServer:
    """A loopback HTTP server that captures one OAuth authorization callback.

    Binds on :meth:`start` (or entering ``with`` / ``async with``) and stops on
    :meth:`close` (or leaving the block). ``host="localhost"`` listens on both
    127.0.0.1 and ::1 (where available) with the same port; an IP literal
    listens on that address only; anything not loopback raises
    :class:`InsecureHostError` unless ``allow_non_loopback=True``. ``port=0``
    picks a free port; :attr:`port` and :attr:`redirect_uri` give the real one.
    A taken port raises :class:`PortInUseError` on start.

    The first ``GET`` to exactly ``callback_path`` with a valid ``Host``
    header completes the flow; the server then stops accepting connections.
    ``expected_state`` may be given here or to :meth:`wait_for_callback`; once
    known, a callback whose state is wrong or missing gets the error page and
    is ignored (counted, and named in the :class:`CallbackTimeout` message).
    ``connection_timeout`` is one deadline for each connection's whole request,
    from accept to response.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 3000,
        callback_path: str = "/callback",
        *,
        success_html: str | None = None,
        error_html: str | None = None,
        on_request: Callable[[RequestInfo], object] | None = None,
        redact_query: bool = True,
        allow_non_loopback: bool = False,
        connection_timeout: float = 10.0,
        expected_state: str | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        if not callback_path.startswith("/") or "?" in callback_path or "#" in callback_path:
            raise ValueError(f"callback_path must be an absolute path, got {callback_path!r}")
        if connection_timeout <= 0:
            raise ValueError("connection_timeout must be positive")
        self._targets, self._uri_host, loopback = _resolve_host(host, allow_non_loopback)
        self.host = host
        self.callback_path = callback_path
        self.connection_timeout = connection_timeout
        self._requested_port = port
        self._success_html = success_html if success_html is not None else DEFAULT_SUCCESS_HTML
        self._error_html = error_html
        self._on_request = on_request
        self._redact_query = redact_query
        self._expected_state = expected_state
        if not loopback:
            logger.warning(
                "callback server will listen on non-loopback host %r: anyone who can reach it "
                "can deliver an authorization callback",
                host,
            )

        self._lock = threading.Lock()
        self._port: int | None = None
        self._allowed_hosts: frozenset[str] = frozenset()
        self._loop: ConnectionLoop | None = None
        self._started = False
        self._closed = False
        self._claimed = False
        self._rejected = 0  # callbacks with a wrong or missing state, ignored
        self._params: dict[str, str] | None = None
        self._finished = threading.Event()

    def __repr__(self) -> str:
        where = self.redirect_uri if self._port is not None else f"{self.host}:unbound"
        state = "closed" if self._closed else ("listening" if self._started else "new")
        return f"<CallbackServer {where} {state}>"

    # -- lifecycle

    def start(self) -> None:
        """Bind and start serving. Raises :class:`PortInUseError` if the port is taken."""
        with self._lock:
            if self._started or self._closed:
                raise RuntimeError("CallbackServer can only be started once")
            self._started = True
        listeners, port = _bind_all(self._targets, self._requested_port, self.host)
        self._port = port
        names = {"localhost", "127.0.0.1", "[::1]", self._uri_host.lower()}
        allowed = {f"{name}:{port}" for name in names}
        if port == 80:
            allowed |= names
        self._allowed_hosts = frozenset(allowed)
        self._loop = ConnectionLoop(
            listeners,
            self._handle,
            deadline=self.connection_timeout,
            max_connections=fd_budget(_MAX_CONNECTIONS),
            max_head=_MAX_HEAD,
            too_large=self._status_reply(431, "Request Header Fields Too Large"),
            name=f"oauth-callback-server-{port}",
        )
        self._loop.start()
        logger.debug("callback server listening on %s", self.redirect_uri)

    def close(self) -> None:
        """Stop accepting, drop open connections and wake every waiter. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._loop is not None:
            self._loop.close()
        self._finished.set()

    def __enter__(self) -> CallbackServer:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> CallbackServer:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- properties

    @property
    def port(self) -> int:
        """The port actually bound. Raises :class:`RuntimeError` before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("CallbackServer is not started")
        return self._port

    @property
    def redirect_uri(self) -> str:
        """``http://<host>:<port><callback_path>`` with the real port, e.g. for ``port=0``."""
        return f"http://{self._uri_host}:{self.port}{self.callback_path}"

    # -- waiting

    def wait_for_callback(
        self,
        timeout: float | None = 300.0,
        expected_state: str | None = None,
        cancel: threading.Event | None = None,
    ) -> CallbackResult:
        """Block until the callback arrives and return its parameters.

        Raises :class:`CallbackTimeout` after ``timeout`` seconds (``None``: no
        limit), :class:`CallbackCancelled` soon after ``cancel`` is set or the
        server is closed, :class:`OAuthStateError` if ``state`` does not match
        ``expected_state``, :class:`OAuthError` if the provider sent ``error``.
        """
        self._begin_wait(expected_state)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.is_set():
            if cancel is not None and cancel.is_set():
                raise CallbackCancelled("waiting for the authorization callback was cancelled")
            slice_ = _POLL_INTERVAL  # short slices: prompt cancel, Ctrl-C works on Windows
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error(timeout)
                slice_ = min(slice_, remaining)
            self._finished.wait(slice_)
        return self._result(expected_state)

    async def wait_for_callback_async(
        self, timeout: float | None = 300.0, expected_state: str | None = None
    ) -> CallbackResult:
        """Await the callback; the async twin of :meth:`wait_for_callback`.

        Works under asyncio and trio (AnyIO). Cancel it by cancelling the task
        (the cancellation propagates; the enclosing ``async with`` closes the
        server).
        """
        import anyio

        self._begin_wait(expected_state)
        # Polls the completion flag (set by a server thread) with anyio.sleep:
        # backend-neutral (asyncio and trio), cancellable at every tick.
        deadline = None if timeout is None else anyio.current_time() + timeout
        while not self._finished.is_set():
            pause = _POLL_INTERVAL
            if deadline is not None:
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    raise self._timeout_error(timeout)
                pause = min(pause, remaining)
            await anyio.sleep(pause)
        return self._result(expected_state)

    # -- internals

    def expect_state(self, state: str) -> None:
        """Set the ``state`` the callback must carry, when it was not known at
        construction: call it before the browser is sent to the provider, so a
        forged callback arriving before the wait begins is ignored too (once
        the state is known, a callback with a wrong or missing one always is)."""
        with self._lock:
            self._expected_state = state

    def _begin_wait(self, expected_state: str | None) -> None:
        if not self._started:
            raise RuntimeError("CallbackServer is not started; use 'with' or call start()")
        if expected_state is not None:
            with self._lock:
                self._expected_state = expected_state

    def _timeout_error(self, timeout: float | None) -> CallbackTimeout:
        with self._lock:
            rejected = self._rejected
        message = f"no authorization callback on {self.redirect_uri} within {timeout:g} s"
        if rejected:
            message += (
                f"; {rejected} callback(s) with a wrong or missing state were rejected "
                "(a stale browser tab, or another program trying to interfere with the login)"
            )
        return CallbackTimeout(message)

    def _result(self, expected_state: str | None) -> CallbackResult:
        with self._lock:
            params = self._params
            expected = expected_state if expected_state is not None else self._expected_state
        if params is None:
            raise CallbackCancelled(
                "the callback server was closed before the authorization callback arrived"
            )
        outcome = _evaluate(params, expected)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    def _claim(self, params: Mapping[str, str]) -> _Outcome | None:
        """First callback with the expected state wins: stop accepting and say which
        page to show; ``None`` once claimed.

        A callback whose state is wrong or missing while the expected state is
        known is *ignored* (``_Outcome.ignored``): it gets the error page, is
        counted and logged without its values, and the wait goes on, so a
        forged callback from another local process cannot end the login.
        """
        with self._lock:
            if self._claimed or self._closed:
                return None
            expected = self._expected_state
            outcome = _evaluate(params, expected)
            if expected is not None and isinstance(outcome.error, OAuthStateError):
                self._rejected += 1
                rejected = self._rejected
            else:
                self._claimed = True
                rejected = 0
        if rejected:
            logger.log(
                logging.WARNING if rejected == 1 else logging.DEBUG,
                "rejected callback #%d on %s: its state is %s (a stale browser tab, or another "
                "program trying to interfere); still waiting for the real one",
                rejected, self.redirect_uri, "missing" if "state" not in params else "wrong",
            )
            return _Outcome(outcome.result, outcome.error, ignored=True)
        if self._loop is not None:
            self._loop.stop_accepting()
        return outcome

    def _handle(self, head: bytes, address: Any) -> Reply:
        """One complete request head (in the connection loop's thread)."""
        claim: list[dict[str, str]] = []
        response = _Handler(head, address, self, claim).response
        if not claim:
            return Reply(response)
        params = claim[0]
        # Published once the page went out (or the connection failed), so the
        # browser has its page before the waiter returns and closes the server.
        return Reply(response, on_done=lambda: self._publish(params), protect=True)

    @staticmethod
    def _status_reply(status: int, message: str) -> bytes:
        body = status_page(status, message).encode("utf-8")
        head = [f"HTTP/1.1 {status} {message}", *(f"{k}: {v}" for k, v in _SECURITY_HEADERS),
                f"Content-Length: {len(body)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    def deliver(self, params: Mapping[str, str]) -> bool:
        """Complete the wait with a callback that arrived another way: the query of
        a redirect URL the person pasted (:mod:`oauth_callback.paste`).

        It is judged exactly like a request to :attr:`redirect_uri` (the waiter
        gets the same :class:`CallbackResult` or error). First callback wins:
        returns ``False``, changing nothing, when one was already received or
        the server is closed, or when its state is wrong or missing (ignored,
        like a forged request).
        """
        outcome = self._claim(params)
        if outcome is None or outcome.ignored:
            return False
        self._publish(dict(params))
        return True

    def _publish(self, params: dict[str, str]) -> None:
        with self._lock:
            if self._closed:
                return
            self._params = params
        logger.debug("authorization callback received on %s", self.redirect_uri)
        self._finished.set()

    def _render_error(self, error: str, description: str | None, uri: str | None) -> str:
        return render_error(self._error_html, error, description, uri)


# --------------------------------------------------------------------------- wrappers


@dataclass(frozen=True)
class LoopbackOptions:
    """How to serve a callback: what ``get_auth_code``, ``OAuthClient.login`` and the
    MCP provider pass to :class:`CallbackServer`, built in one place (:meth:`server`)."""

    host: str = "localhost"
    port: int = 0
    callback_path: str = "/callback"
    success_html: str | None = None
    error_html: str | None = None
    on_request: Callable[[RequestInfo], object] | None = None

    def server(
        self, expected_state: str | None = None, *, port: int | None = None
    ) -> CallbackServer:
        """A new (not yet started) :class:`CallbackServer`; ``port`` overrides :attr:`port`."""
        return CallbackServer(
            self.host,
            self.port if port is None else port,
            self.callback_path,
            success_html=self.success_html,
            error_html=self.error_html,
            on_request=self.on_request,
            expected_state=expected_state,
        )


def get_auth_code(
    authorization_url: str,
    *,
    port: int = 3000,
    host: str = "localhost",
    callback_path: str = "/callback",
    timeout: float | None = 300.0,
    open_browser: OpenBrowser = True,
    expected_state: str | None = None,
    success_html: str | None = None,
    error_html: str | None = None,
    on_request: Callable[[RequestInfo], object] | None = None,
    cancel: threading.Event | None = None,
) -> CallbackResult:
    """Serve the callback on a fixed port, show ``authorization_url``, return the callback.

    ``authorization_url`` must already carry the redirect URI
    ``http://<host>:<port><callback_path>``; to use ``port=0`` build the URL
    from :attr:`CallbackServer.redirect_uri` instead. Raises what
    :meth:`CallbackServer.start` and :meth:`CallbackServer.wait_for_callback`
    raise; the server is closed on every exit path.
    """
    options = LoopbackOptions(host, port, callback_path, success_html, error_html, on_request)
    with options.server(expected_state) as server:
        open_url(authorization_url, open_browser)
        return server.wait_for_callback(timeout, expected_state, cancel)


async def get_auth_code_async(
    authorization_url: str,
    *,
    port: int = 3000,
    host: str = "localhost",
    callback_path: str = "/callback",
    timeout: float | None = 300.0,
    open_browser: OpenBrowser = True,
    expected_state: str | None = None,
    success_html: str | None = None,
    error_html: str | None = None,
    on_request: Callable[[RequestInfo], object] | None = None,
) -> CallbackResult:
    """The async twin of :func:`get_auth_code`; cancel it by cancelling the task.

    ``open_browser`` is shown with :func:`~oauth_callback.browser.open_url_async`:
    the system browser and a plain callable run in a worker thread, an
    ``async`` callable is awaited.
    """
    options = LoopbackOptions(host, port, callback_path, success_html, error_html, on_request)
    async with options.server(expected_state) as server:
        await open_url_async(authorization_url, open_browser)
        return await server.wait_for_callback_async(timeout, expected_state)
