"""The two drivers of every flow: :func:`run` (sync) and :func:`run_async` (async).

A *flow* is a generator of :mod:`effects <oauth_callback.effects>`: it decides
(pure code, no I/O) and ``yield``\\ s what should happen; a driver performs each
effect and sends the answer back, until the flow returns its result. This is
the pattern of ``httpx`` auth flows: the logic is written once, and the sync
and async public methods (``login`` / ``login_async``) are thin shells that
hand the same flow to one driver or the other.

How to add a flow (a grant, revocation, ...)
--------------------------------------------
1. Build its requests with pure functions (``protocol.py``, ``device.py``).
2. Write the flow once, as a generator method of
   :class:`~oauth_callback.flow.OAuthClient` (or a function), yielding only
   effects, e.g. for the client credentials grant::

       def _client_credentials_flow(self) -> Flow[Tokens]:
           yield from self._endpoints_flow()          # discovery when needed
           return (yield from token_flow(self._client_credentials_request))

   Reuse ``yield from`` for the parts that exist (``_endpoints_flow``,
   :func:`~oauth_callback.protocol.token_flow`, :func:`metadata_flow`,
   :func:`~oauth_callback.effects.translated` for a pure generator that yields
   plain values). Clean-up that must happen on every exit goes through
   :func:`~oauth_callback.effects.ensure` (``yield from ensure(body,
   DeleteSession(store, key))``): failures of other effects are thrown in at
   the ``yield``, so the clean-up effects are still served by the driver.
3. Add the two public shells::

       def client_credentials(self) -> Tokens:
           return run(self._client_credentials_flow(), http=self._http, timeout=self.timeout)

       async def client_credentials_async(self) -> Tokens:
           return await run_async(self._client_credentials_flow(),
                                  http=self._async_http, timeout=self.timeout)

4. Test the flow without a network by sending it answers by hand (every effect
   is a frozen value), and end to end against ``oauth_callback.testing.MockProvider``.

Only when a genuinely new kind of I/O is needed, add an effect class to
:mod:`oauth_callback.effects` and handle it in *both* ``_perform`` functions
below (they are the only places that do I/O for flows).

Guarantees of both drivers: an HTTP client is opened only when the flow first
needs one (and closed at the end, unless it was given); a callback server the
flow started is closed on every exit path; store effects of an async flow run
in worker threads, and a :class:`~oauth_callback.effects.DeleteSession` or
:class:`~oauth_callback.effects.SaveLogin` is shielded from cancellation (a
clean-up or an earned token is never half done because the task was cancelled).

Every HTTP answer is read streamed and bounded by :data:`MAX_RESPONSE_BYTES`
(1 MiB, decoded): an answer that declares a larger ``Content-Length`` is refused
before its body is read, and one that grows past the bound is dropped there (no
OAuth document comes close). Either comes back as the typed failure of the
effect (:class:`DiscoveryError`, :class:`RegistrationError` or
:class:`TokenEndpointError`, naming the URL and the HTTP status), so a hostile
server cannot exhaust memory or have a huge value stored.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ._http import httpx2
from .browser import open_url, open_url_async
from .effects import (
    Backoff,
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
    TokenRequest,
    WaitCallback,
    translated,
)
from .errors import CallbackCancelled, DiscoveryError, RegistrationError, TokenEndpointError
from .protocol import CallbackResult, RawResponse, ServerMetadata, discovery_flow

if TYPE_CHECKING:
    import ssl

    from .loopback import CallbackServer

__all__ = ["MAX_RESPONSE_BYTES", "metadata_flow", "run", "run_async"]

R = TypeVar("R")

#: The most bytes (after content decoding) of one HTTP answer a driver reads.
MAX_RESPONSE_BYTES = 1 << 20

# Failures whose text describes only the connection ("[Errno 111] Connection
# refused", "timed out"). Others, protocol errors above all, may quote bytes the
# server sent, a token among them: only their type is shown.
_SAFE_DETAIL = (httpx2.ConnectError, httpx2.TimeoutException)


_ssl_lock = threading.Lock()
_ssl_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _default_verify() -> ssl.SSLContext:
    """The ``verify=`` of the short-lived clients the drivers open: one SSL context per
    process (per ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, which select it as httpx2's
    default does), not a new one per flow. Loading the CA certificates costs
    ~20-65 ms of CPU, which every refresh by a ``TokenManager`` without an
    ``http_client`` paid before its token request was sent. CA files changed on
    disk are seen by a new process (as by a long-lived ``httpx2.Client``)."""
    where = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _ssl_lock:
        context = _ssl_contexts.get(where)
        if context is None:
            context = _ssl_contexts[where] = httpx2.create_ssl_context()
    return context


def metadata_flow(issuer: str) -> Flow[ServerMetadata]:
    """Discovery (RFC 8414, then OIDC) of ``issuer`` as a flow of :class:`HttpGet`."""
    return (yield from translated(discovery_flow(issuer), HttpGet))


def _network_error(what: str, url: str, exc: Exception) -> str:
    detail = str(exc).strip() if isinstance(exc, _SAFE_DETAIL) else ""
    return f"could not reach the {what} {url}: {type(exc).__name__}" + (
        f" ({detail[:200]})" if detail else ""
    )


def _raw(response: httpx2.Response, body: bytes) -> RawResponse:
    return RawResponse(
        response.status_code, {k.lower(): v for k, v in response.headers.items()}, body
    )


class _BoundedAnswer:
    """One HTTP answer's body, read up to :data:`MAX_RESPONSE_BYTES`, for either driver.

    ``over`` is set when ``Content-Length`` announces more (nothing need be read) or
    when the chunks given to :meth:`take` pass the bound; :meth:`result` is then the
    endpoint's typed error, else the :class:`RawResponse` the flow is sent.
    """

    def __init__(self, effect: TokenRequest | HttpGet | PostJSON,
                 response: httpx2.Response) -> None:
        self.effect, self.response = effect, response
        self.body = bytearray()
        try:
            self.over = int(response.headers.get("content-length", "0")) > MAX_RESPONSE_BYTES
        except ValueError:
            self.over = False  # not a number: the bounded read decides

    def take(self, chunk: bytes) -> bool:
        """Add ``chunk``; False once the body is over the bound (read no more)."""
        self.body += chunk
        self.over = len(self.body) > MAX_RESPONSE_BYTES
        return not self.over

    def result(self) -> RawResponse | TokenEndpointError | RegistrationError | DiscoveryError:
        if self.over:
            return _too_large(self.effect, self.response)
        return _raw(self.response, bytes(self.body))


def _too_large(
    effect: TokenRequest | HttpGet | PostJSON, response: httpx2.Response
) -> TokenEndpointError | RegistrationError | DiscoveryError:
    what, url = _what(effect), effect.url
    message = (f"the {what} {url} answered more than {MAX_RESPONSE_BYTES} bytes "
               f"(HTTP {response.status_code}); the rest was not read")
    if isinstance(effect, HttpGet):
        return DiscoveryError(message)
    kind = RegistrationError if isinstance(effect, PostJSON) else TokenEndpointError
    return kind(message, status_code=response.status_code)


def _request_args(effect: TokenRequest | HttpGet | PostJSON) -> tuple[str, str, dict[str, Any]]:
    """``(method, url, keyword arguments)`` of an HTTP effect, for either client."""
    if isinstance(effect, TokenRequest):
        return "POST", effect.url, {"content": effect.body, "headers": dict(effect.headers)}
    if isinstance(effect, PostJSON):
        return "POST", effect.url, {"json": dict(effect.body),
                                    "headers": {"Accept": "application/json"}}
    headers = {"Accept": "application/json"} if effect.headers is None else dict(effect.headers)
    return "GET", effect.url, {"headers": headers}


def _http_failure(
    effect: TokenRequest | HttpGet | PostJSON, exc: Exception
) -> TokenEndpointError | RegistrationError | DiscoveryError:
    message = _network_error(_what(effect), effect.url, exc)
    if isinstance(effect, HttpGet):
        return DiscoveryError(message)
    return (RegistrationError if isinstance(effect, PostJSON) else TokenEndpointError)(message)


def _what(effect: TokenRequest | HttpGet | PostJSON) -> str:
    return "token endpoint" if isinstance(effect, TokenRequest) else effect.what


class _Run:
    """One run of a flow: the flow's progress (:meth:`resume`), the HTTP client (opened
    on first use) and the callback server, closed by :meth:`close_server` on every
    exit path. Both drivers share it; only the performing of effects differs."""

    def __init__(self, flow: Flow[Any], http: Any, timeout: float) -> None:
        self.flow = flow
        self.http = http
        self.timeout = timeout
        self.server: CallbackServer | None = None
        self.effect: Any = None
        self.reply: Any = None
        self.error: BaseException | None = None
        self.result: Any = None

    def resume(self) -> bool:
        """Hand the flow the last answer (or throw it the last failure) and take its
        next effect into :attr:`effect`; ``False`` once it returned (:attr:`result`)."""
        reply, error, self.reply, self.error, self.effect = (
            self.reply, self.error, None, None, None
        )
        try:
            self.effect = self.flow.send(reply) if error is None else self.flow.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            return False
        return True

    def start(self, effect: StartCallback) -> str:
        self.close_server()
        server = effect.options.server(effect.expected_state)
        server.start()
        self.server = server
        return server.redirect_uri

    def running(self) -> CallbackServer:
        if self.server is None:
            raise RuntimeError("WaitCallback without a StartCallback")
        return self.server

    @contextlib.contextmanager
    def pasting(self, effect: WaitCallback) -> Iterator[None]:
        """While the wait lasts, read pasted redirect URLs (``effect.paste``); a good
        one is delivered to the server, exactly as a real callback would arrive."""
        if effect.paste is None or effect.judge is None:
            yield
            return
        from .paste import PasteListener

        server, judge = self.running(), effect.judge

        def deliver(line: str) -> CallbackResult | str | None:
            verdict = judge(line)
            if isinstance(verdict, CallbackResult):
                server.deliver(verdict.params)
            return verdict

        listener = PasteListener(effect.paste, deliver).start()
        try:
            yield
        finally:
            listener.stop()

    def close_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()


def _blocking(effect: Any) -> Any:
    """Perform an effect that blocks the calling thread: store reads and writes."""
    if isinstance(effect, LoadClient):
        return effect.store.get_client(effect.key)
    if isinstance(effect, SaveSession):
        effect.store.set_session(effect.key, effect.session)
    elif isinstance(effect, DeleteSession):
        effect.store.delete_session(effect.key)
    elif isinstance(effect, SaveLogin):
        if effect.client is not None:
            effect.store.set_client(effect.key, effect.client)
        effect.store.set(effect.key, effect.tokens)
    else:
        raise TypeError(f"a flow yielded {type(effect).__name__}, which is not an effect")
    return None


# --------------------------------------------------------------------------- sync


def run(
    flow: Flow[R],
    *,
    http: httpx2.Client | None = None,
    timeout: float = 30.0,
    cancel: threading.Event | None = None,
) -> R:
    """Drive ``flow`` to its result in this thread.

    ``http`` is used (never closed) when given, else a client with ``timeout``
    is opened on the first HTTP effect. Setting ``cancel`` ends a
    :class:`Backoff` or :class:`WaitCallback` with :class:`CallbackCancelled`.
    """
    state = _Run(flow, http, timeout)
    try:
        with contextlib.ExitStack() as stack:
            while state.resume():
                try:
                    state.reply = _perform(state.effect, state, stack, cancel)
                except BaseException as exc:  # thrown into the flow by resume()
                    state.error = exc
        return state.result  # type: ignore[no-any-return]
    finally:
        state.close_server()


def _perform(
    effect: Any, state: _Run, stack: contextlib.ExitStack, cancel: threading.Event | None
) -> Any:
    if isinstance(effect, (TokenRequest, HttpGet, PostJSON)):
        if state.http is None:
            state.http = stack.enter_context(
                httpx2.Client(timeout=state.timeout, verify=_default_verify())
            )
        method, url, kwargs = _request_args(effect)
        try:
            with state.http.stream(method, url, **kwargs) as response:
                answer = _BoundedAnswer(effect, response)
                if not answer.over:
                    for chunk in response.iter_bytes():
                        if not answer.take(chunk):
                            break
                return answer.result()
        except httpx2.RequestError as exc:
            return _http_failure(effect, exc)
    if isinstance(effect, Backoff):
        if cancel is None:
            time.sleep(effect.seconds)
        elif cancel.wait(effect.seconds):
            raise CallbackCancelled("the login was cancelled")
        return None
    if isinstance(effect, StartCallback):
        return state.start(effect)
    if isinstance(effect, WaitCallback):
        with state.pasting(effect):
            return state.running().wait_for_callback(
                effect.timeout, effect.expected_state, cancel
            )
    if isinstance(effect, CloseCallback):
        state.close_server()
        return None
    if isinstance(effect, OpenURL):
        open_url(effect.url, effect.open_browser)
        return None
    if isinstance(effect, Show):
        effect.show(effect.value)
        return None
    return _blocking(effect)


# --------------------------------------------------------------------------- async


async def run_async(
    flow: Flow[R], *, http: httpx2.AsyncClient | None = None, timeout: float = 30.0
) -> R:
    """Drive ``flow`` to its result in the running event loop (asyncio or trio).

    Cancel it by cancelling the task: the cancellation is thrown into the flow,
    whose clean-up effects still run (shielded). ``http`` as in :func:`run`.
    """
    state = _Run(flow, http, timeout)
    try:
        async with contextlib.AsyncExitStack() as stack:
            while state.resume():
                try:
                    state.reply = await _perform_async(state.effect, state, stack)
                except BaseException as exc:  # thrown into the flow by resume()
                    state.error = exc
        return state.result  # type: ignore[no-any-return]
    finally:
        state.close_server()


async def _perform_async(effect: Any, state: _Run, stack: contextlib.AsyncExitStack) -> Any:
    import anyio
    import anyio.to_thread

    if isinstance(effect, (TokenRequest, HttpGet, PostJSON)):
        if state.http is None:
            state.http = await stack.enter_async_context(
                httpx2.AsyncClient(timeout=state.timeout, verify=_default_verify())
            )
        method, url, kwargs = _request_args(effect)
        try:
            async with state.http.stream(method, url, **kwargs) as response:
                answer = _BoundedAnswer(effect, response)
                if not answer.over:
                    async for chunk in response.aiter_bytes():
                        if not answer.take(chunk):
                            break
                return answer.result()
        except httpx2.RequestError as exc:
            return _http_failure(effect, exc)
    if isinstance(effect, Backoff):
        await anyio.sleep(effect.seconds)
        return None
    if isinstance(effect, StartCallback):
        return state.start(effect)
    if isinstance(effect, WaitCallback):
        with state.pasting(effect):
            return await state.running().wait_for_callback_async(
                effect.timeout, effect.expected_state
            )
    if isinstance(effect, CloseCallback):
        state.close_server()
        return None
    if isinstance(effect, OpenURL):
        await open_url_async(effect.url, effect.open_browser)
        return None
    if isinstance(effect, Show):
        if inspect.iscoroutinefunction(effect.show):
            await effect.show(effect.value)
        else:
            await anyio.to_thread.run_sync(effect.show, effect.value)
        return None
    shielded = isinstance(effect, (DeleteSession, SaveLogin))
    with anyio.CancelScope(shield=shielded):
        return await anyio.to_thread.run_sync(_blocking, effect)
