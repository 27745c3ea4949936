"""The effects a flow asks its driver to perform, without I/O.

A *flow* (see :mod:`oauth_callback.driver`) is a generator: it ``yield``\\ s one
of the values below, the driver performs it and sends the answer back. Every
effect is a frozen value, so a test can drive a flow by hand and assert exactly
what it asked for, in order.

====================  ==============================================  =============================
effect                the driver ...                                  and sends back
====================  ==============================================  =============================
:class:`TokenRequest` ``POST``\\ s the form (token, device endpoints)   :class:`RawResponse`, or the
                                                                      network failure as a
                                                                      :class:`TokenEndpointError`
:class:`HttpGet`      ``GET``\\ s a JSON document (metadata)            :class:`RawResponse`, or a
                                                                      :class:`DiscoveryError`
:class:`PostJSON`     ``POST``\\ s a JSON body (registration)           :class:`RawResponse`, or a
                                                                      :class:`RegistrationError`
:class:`Backoff`      sleeps (cancellable)                            ``None``
:class:`StartCallback` starts a loopback :class:`CallbackServer`      its ``redirect_uri``
:class:`OpenURL`      shows the URL (:mod:`oauth_callback.browser`)   ``None``
:class:`WaitCallback` waits for the callback (and, with ``paste``,    :class:`CallbackResult`
                      reads pasted redirect URLs meanwhile)
:class:`CloseCallback` closes the server (the driver also closes it   ``None``
                      on every exit path)
:class:`Show`         calls ``show(value)`` (a device code)           ``None``
:class:`LoadClient`   ``store.get_client(key)``                       the :class:`ClientInfo`
                                                                      or ``None``
:class:`SaveSession`  ``store.set_session(key, session)``             ``None``
:class:`DeleteSession` ``store.delete_session(key)``                  ``None``
:class:`SaveLogin`    ``store.set_client`` then ``store.set``         ``None``
====================  ==============================================  =============================

HTTP failures come back as *values* (so :func:`~oauth_callback.protocol.token_flow`
can retry them); every other failure (a timeout, a cancelled wait, a store
error, Ctrl-C) is *thrown* into the flow at its ``yield``, so :func:`ensure`
(a ``try/finally`` for flows) can still ``yield`` clean-up effects
(``DeleteSession``) before the failure propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TypeAlias, TypeVar

from .protocol import Backoff, CallbackResult, TokenRequest

if TYPE_CHECKING:
    from .browser import OpenBrowser
    from .loopback import LoopbackOptions
    from .models import ClientInfo, OAuthSession, Tokens
    from .storage.base import TokenStore

__all__ = [
    "Backoff",
    "CloseCallback",
    "DeleteSession",
    "Effect",
    "Flow",
    "HttpGet",
    "LoadClient",
    "OpenURL",
    "PostJSON",
    "SaveLogin",
    "SaveSession",
    "Show",
    "StartCallback",
    "TokenRequest",
    "WaitCallback",
    "ensure",
    "translated",
]

R = TypeVar("R")
Y = TypeVar("Y")


@dataclass(frozen=True)
class HttpGet:
    """``GET url`` with ``headers`` (default ``Accept: application/json``); ``what``
    names it in errors. The ``repr`` never shows the headers (a Bearer token)."""

    url: str
    what: str = field(default="metadata URL", repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, repr=False)
class PostJSON:
    """``POST url`` with a JSON ``body``; ``secrets`` are values to redact from answers."""

    url: str
    body: Mapping[str, Any]
    what: str = "registration endpoint"
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"PostJSON(url={self.url!r}, fields={sorted(self.body)!r})"


@dataclass(frozen=True)
class StartCallback:
    """Start ``options.server(expected_state)``; the answer is its ``redirect_uri``."""

    options: LoopbackOptions
    expected_state: str | None = None


@dataclass(frozen=True, repr=False)
class OpenURL:
    """Show ``url`` as :func:`~oauth_callback.browser.open_url` does (async drivers:
    :func:`~oauth_callback.browser.open_url_async`)."""

    url: str
    open_browser: OpenBrowser = True

    def __repr__(self) -> str:  # the URL carries the state
        return "OpenURL(<authorization url>)"


@dataclass(frozen=True)
class WaitCallback:
    """Wait for the callback of the running server; the answer is its
    :class:`~oauth_callback.protocol.CallbackResult` (the server's own checks done).

    With ``paste`` (a text stream, e.g. ``sys.stdin``) the driver also reads
    pasted redirect URLs meanwhile (:class:`~oauth_callback.paste.PasteListener`):
    ``judge(line)`` answers a :class:`~oauth_callback.protocol.CallbackResult`,
    which completes the wait as a real callback would (first wins), or an
    explanation of what is wrong with the paste.
    """

    timeout: float | None
    expected_state: str | None = field(default=None, repr=False)
    paste: IO[str] | None = field(default=None, repr=False)
    judge: Callable[[str], CallbackResult | str | None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CloseCallback:
    """Close the running callback server (a no-op when none runs)."""


@dataclass(frozen=True)
class Show:
    """Call ``show(value)``: a plain function in the calling thread (sync driver) or a
    worker thread (async driver); an ``async`` function is awaited."""

    show: Callable[[Any], object]
    value: Any


@dataclass(frozen=True)
class SaveSession:
    """Keep the authorization in progress: ``store.set_session(key, session)``
    (the ``repr`` shows only the key)."""

    store: TokenStore = field(repr=False)
    key: str
    session: OAuthSession = field(repr=False)


@dataclass(frozen=True)
class LoadClient:
    """Read ``store.get_client(key)``; the answer is the :class:`ClientInfo` or ``None``."""

    store: TokenStore
    key: str


@dataclass(frozen=True)
class DeleteSession:
    """``store.delete_session(key)``; async drivers shield it from cancellation."""

    store: TokenStore
    key: str


@dataclass(frozen=True)
class SaveLogin:
    """Save what a login earned: ``store.set_client(key, client)`` (when given) first,
    then ``store.set(key, tokens)``: tokens without the client that can refresh them
    would force a new login, a client without new tokens is harmless. The ``repr``
    shows only the key."""

    store: TokenStore = field(repr=False)
    key: str
    tokens: Tokens = field(repr=False)
    client: ClientInfo | None = field(default=None, repr=False)


Effect: TypeAlias = (
    "TokenRequest | HttpGet | PostJSON | Backoff | StartCallback | OpenURL | WaitCallback"
    " | CloseCallback | Show | LoadClient | SaveSession | DeleteSession | SaveLogin"
)
#: A flow: yields effects, is sent their answers, returns ``R``.
Flow: TypeAlias = Generator[Any, Any, R]


def translated(inner: Generator[Y, Any, R], effect: Callable[[Y], Any]) -> Flow[R]:
    """Run ``inner`` inside a flow, turning each value it yields into ``effect(value)``.

    For the pure generators that yield plain values (a URL, a
    :class:`~oauth_callback.device.DeviceAuthorization`): answers go back to
    ``inner`` unchanged, exceptions thrown at the ``yield`` are thrown into it.
    """
    try:
        item = next(inner)
        while True:
            try:
                reply = yield effect(item)
            except BaseException as exc:  # handed to the inner generator
                item = inner.throw(exc)
            else:
                item = inner.send(reply)
    except StopIteration as stop:  # the inner generator returned (maybe at once)
        return stop.value  # type: ignore[no-any-return]


def ensure(body: Flow[R], *cleanup: Any) -> Flow[R]:
    """Run the flow ``body``, then yield the ``cleanup`` effects whatever happened
    (its result, or its exception re-raised after them): a ``try/finally`` for flows.

    A flow abandoned without being driven to its end (``close()``) cannot yield,
    so then nothing runs; the drivers never abandon a flow.
    """
    try:
        result = yield from body
    except GeneratorExit:
        raise
    except BaseException:
        for effect in cleanup:
            yield effect
        raise
    for effect in cleanup:
        yield effect
    return result
