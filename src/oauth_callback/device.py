"""The device authorization grant (RFC 8628), without I/O.

For a device or a terminal that cannot receive a redirect (SSH, containers,
CI): the client asks the *device authorization endpoint* for a ``user_code``
and a ``verification_uri``, shows them to the person, who opens the URL on any
other device and enters the code, and meanwhile polls the token endpoint with
the ``device_code`` until the person approves or denies, or the code expires.

Everything here is pure, like :mod:`oauth_callback.protocol`:

* :func:`device_authorization_request` builds the request (client
  authentication as at the token endpoint, ``scope``, ``resource``) and
  :func:`parse_device_authorization_response` judges the answer
  (:class:`DeviceAuthorization`); :func:`device_authorization_flow` is the
  one-request generator of both.
* :func:`device_login_flow` is the whole grant as one generator of effects:
  the two above, then a yield of the :class:`DeviceAuthorization` (show the
  code to the person), then :func:`device_poll_flow`.
* :func:`device_token_request` builds the poll, and :func:`device_poll_flow`
  is the polling decision as a :data:`~oauth_callback.protocol.TokenFlow`
  generator: it yields a :class:`~oauth_callback.protocol.Backoff` (sleep)
  before every :class:`~oauth_callback.protocol.TokenRequest` (post) and
  returns the tokens, so the drivers of :func:`~oauth_callback.protocol.token_flow`
  run it unchanged.

Polling rules (RFC 8628 3.4, 3.5), numbered so tests can name them:

1. The first poll waits one interval too (nobody approves in zero seconds).
2. The interval is the server's ``interval`` (5 s when absent), never less
   than :data:`MIN_INTERVAL`: a provider answering ``interval: 0`` is not
   polled in a loop.
3. ``authorization_pending``: wait the interval and poll again.
4. ``slow_down``: the interval grows by 5 s for this and every later poll.
5. ``access_denied``, ``expired_token`` and every other OAuth error are final
   (:class:`~oauth_callback.errors.OAuthError`, ``error`` set).
6. A network failure, a 5xx or a 429 is not a reason to poll sooner: the next
   wait is the interval doubled per consecutive failure (RFC 8628 3.5 asks to
   back off on timeouts), at least ``Retry-After``; after
   ``max_transient_errors`` consecutive failures the last one is raised.
7. No poll is sent once the wait would reach the ``expires_in`` deadline:
   :class:`~oauth_callback.errors.OAuthError` ``expired_token`` is raised
   locally instead.

The device code is a secret (it redeems the grant): it is in no message or
``repr``. The user code is meant to be shown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from .errors import OAuthError, TokenEndpointError
from .models import Tokens
from .protocol import (
    Backoff,
    RawResponse,
    TokenFlow,
    TokenRequest,
    _error_answer,
    _json_object,
    _retry_after,
    _token_request,
    is_retryable,
    parse_token_response,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .protocol import ClientAuthentication

__all__ = [
    "DEFAULT_INTERVAL",
    "DEVICE_CODE_GRANT",
    "MIN_INTERVAL",
    "SLOW_DOWN_STEP",
    "DeviceAuthorization",
    "DeviceAuthorizationFlow",
    "DeviceLoginFlow",
    "device_authorization_flow",
    "device_authorization_request",
    "device_login_flow",
    "device_poll_flow",
    "device_token_request",
    "parse_device_authorization_response",
]

#: The ``grant_type`` of the device access token request (RFC 8628 3.4).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: The polling interval when the server names none (RFC 8628 3.2).
DEFAULT_INTERVAL = 5.0
#: What each ``slow_down`` adds to the interval (RFC 8628 3.5).
SLOW_DOWN_STEP = 5.0
#: The shortest interval this client polls at, whatever the server says.
MIN_INTERVAL = 1.0
#: The longest wait after consecutive network failures (unless ``Retry-After`` says more).
MAX_BACKOFF = 60.0
#: Consecutive network failures, 5xx or 429 answers tolerated while polling.
DEFAULT_MAX_TRANSIENT_ERRORS = 3
_MAX_SHOWN = 512  # longest user code or verification URI shown to the person


@dataclass(frozen=True, repr=False)
class DeviceAuthorization:
    """A device authorization response (RFC 8628 3.2), validated.

    ``verification_uri_complete`` (the URI with the code in it, for a QR code
    or a click) is ``None`` when the server sent none. ``issued_at`` is the
    ``time.time()`` the request was sent; :attr:`expires_at` follows from it.
    The ``repr`` shows no device code.
    """

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float
    issued_at: float

    @property
    def expires_at(self) -> float:
        """``time.time()`` at which the codes expire."""
        return self.issued_at + self.expires_in

    def __repr__(self) -> str:
        return (
            f"DeviceAuthorization(user_code={self.user_code!r}, "
            f"verification_uri={self.verification_uri!r}, expires_in={self.expires_in!r}, "
            f"interval={self.interval!r})"
        )

    __str__ = __repr__


def device_authorization_request(
    endpoint: str,
    *,
    scope: str | Sequence[str] | None = None,
    resource: str | Sequence[str] | None = None,
    **client: Unpack[ClientAuthentication],
) -> TokenRequest:
    """The device authorization request (RFC 8628 3.1), a form ``POST`` to ``endpoint``.

    The client authenticates as at the token endpoint (``client``: the
    :class:`~oauth_callback.protocol.ClientAuthentication`; ``auth_method`` ``None``:
    ``none`` without a secret, ``client_secret_basic`` with one); ``scope`` is
    space-joined, ``resource`` (RFC 8707) repeated. Raises :class:`ValueError`
    as :func:`~oauth_callback.protocol.authorization_code_request`.
    """
    form: dict[str, str] = {}
    return _token_request(endpoint, form, scope=scope, resource=resource, **client)


def device_token_request(
    token_endpoint: str,
    *,
    device_code: str,
    resource: str | Sequence[str] | None = None,
    **client: Unpack[ClientAuthentication],
) -> TokenRequest:
    """The device access token request (RFC 8628 3.4) that :func:`device_poll_flow` repeats."""
    form = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    return _token_request(token_endpoint, form, resource=resource, **client)


def _malformed(status: int, what: str) -> TokenEndpointError:
    return TokenEndpointError(
        f"malformed device authorization response: {what}", status_code=status
    )


def _number(data: Mapping[str, Any], name: str, status: int) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _malformed(status, f"{name!r} must be a number of seconds")
    return float(value)


def _shown_text(data: Mapping[str, Any], name: str, status: int) -> str | None:
    # Shown in a terminal: a hostile provider must not get escape sequences or
    # a fake second line in front of the person.
    value = data.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > _MAX_SHOWN
        or not value.isprintable()
    ):
        raise _malformed(status, f"{name!r} must be a short printable string")
    return value


def _shown_url(data: Mapping[str, Any], name: str, status: int) -> str | None:
    value = _shown_text(data, name, status)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname or " " in value:
        raise _malformed(status, f"{name!r} must be an http(s) URL")
    return value


def parse_device_authorization_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    secrets: Iterable[str] = (),
) -> DeviceAuthorization:
    """Judge a device authorization response (RFC 8628 3.2, 3.3).

    Returns a :class:`DeviceAuthorization` for a 2xx JSON object with
    ``device_code``, ``user_code``, ``verification_uri`` (Google's
    ``verification_url`` is accepted too) and a positive ``expires_in``;
    ``interval`` defaults to 5 s. Raises :class:`OAuthError` for an RFC 6749
    5.2 error object (``invalid_client``, ``invalid_scope``, ...) and
    :class:`TokenEndpointError` (``status_code`` set) for a 5xx or 429, a body
    that is not a JSON object, or a missing or malformed field, among them a
    user code or URI with control characters. Messages never quote the body;
    provider text has ``secrets`` redacted.
    """
    data = _json_object(body)
    if data is not None and isinstance(data.get("error"), str) and data["error"] and (
        400 <= status < 500 or 200 <= status < 300
    ):
        raise _error_answer(data, secrets)
    if not 200 <= status < 300:
        raise TokenEndpointError(
            f"device authorization endpoint answered HTTP {status}",
            status_code=status,
            retry_after=_retry_after(headers),
        )
    if data is None:
        raise _malformed(status, f"not a JSON object ({len(body)} bytes)")
    device_code = data.get("device_code")
    if not isinstance(device_code, str) or not device_code:
        raise _malformed(status, "no 'device_code'")
    user_code = _shown_text(data, "user_code", status)
    if user_code is None:
        raise _malformed(status, "no 'user_code'")
    uri_name = "verification_uri" if "verification_uri" in data else "verification_url"
    verification_uri = _shown_url(data, uri_name, status)
    if verification_uri is None:
        raise _malformed(status, "no 'verification_uri'")
    expires_in = _number(data, "expires_in", status)
    if expires_in is None or expires_in <= 0:
        raise _malformed(status, "'expires_in' must be a positive number of seconds")
    interval = _number(data, "interval", status)
    if interval is not None and interval < 0:
        raise _malformed(status, "'interval' must not be negative")
    return DeviceAuthorization(
        device_code=device_code,
        user_code=user_code,
        verification_uri=verification_uri,
        verification_uri_complete=_shown_url(data, "verification_uri_complete", status),
        expires_in=expires_in,
        interval=DEFAULT_INTERVAL if interval is None else interval,
        issued_at=time.time() if now is None else now,
    )


DeviceAuthorizationFlow: TypeAlias = Generator[
    TokenRequest, "RawResponse | TokenEndpointError | None", DeviceAuthorization
]


def device_authorization_flow(
    request: TokenRequest, *, now: Callable[[], float] = time.time
) -> DeviceAuthorizationFlow:
    """Yield ``request`` once (send back the response, or the network failure as
    a :class:`TokenEndpointError`) and return the parsed :class:`DeviceAuthorization`.

    Not retried: each request creates a new pair of codes on the server.
    """
    issued_at = now()
    outcome = yield request
    if outcome is None:
        raise TypeError("device_authorization_flow expects a RawResponse or a TokenEndpointError")
    if isinstance(outcome, TokenEndpointError):
        raise outcome
    return parse_device_authorization_response(
        outcome.status, outcome.headers, outcome.body, now=issued_at, secrets=request.secrets()
    )


def device_poll_flow(
    authorization: DeviceAuthorization,
    request: TokenRequest,
    *,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> TokenFlow:
    """Poll with ``request`` until the person answers: the polling rules of this module.

    Yields a :class:`Backoff` (sleep, send back ``None``) before each yield of
    ``request`` (send back the :class:`RawResponse`, or a network failure as a
    :class:`TokenEndpointError` without status). Returns the :class:`Tokens`.
    ``clock`` (monotonic) measures the ``expires_in`` deadline, ``now`` (wall
    time) dates the tokens. Raises :class:`OAuthError` (``access_denied``,
    ``expired_token``, ...) or the last :class:`TokenEndpointError`.
    """
    if max_transient_errors < 0:
        raise ValueError("max_transient_errors must not be negative")
    deadline = clock() + max(authorization.expires_at - now(), 0.0)
    interval = max(authorization.interval, MIN_INTERVAL)
    wait = interval
    failures = 0
    while True:
        if clock() + wait >= deadline:
            raise OAuthError(
                "expired_token",
                "the code expired before the request was approved; start the login again",
            )
        yield Backoff(wait)
        sent_at = now()
        outcome = yield request
        if outcome is None:
            raise TypeError("device_poll_flow expects a RawResponse or a TokenEndpointError")
        try:
            if isinstance(outcome, TokenEndpointError):
                raise outcome
            tokens: Tokens = parse_token_response(
                outcome.status, outcome.headers, outcome.body, now=sent_at,
                secrets=request.secrets(),
            )
        except OAuthError as exc:
            failures = 0
            if exc.error == "slow_down":
                interval += SLOW_DOWN_STEP
            elif exc.error != "authorization_pending":
                raise
            wait = interval
            continue
        except TokenEndpointError as exc:
            failures += 1
            if not is_retryable(exc) or failures > max_transient_errors:
                raise
            wait = max(interval, min(interval * 2**failures, MAX_BACKOFF))
            if exc.retry_after is not None:
                wait = max(wait, exc.retry_after)
            continue
        return tokens


DeviceLoginFlow: TypeAlias = Generator[
    "TokenRequest | Backoff | DeviceAuthorization",
    "RawResponse | TokenEndpointError | None",
    Tokens,
]


def device_login_flow(
    request: TokenRequest,
    poll_request: Callable[[DeviceAuthorization], TokenRequest],
    *,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> DeviceLoginFlow:
    """The whole device grant as effects, for the sync and async drivers of the client.

    Yields a :class:`TokenRequest` to ``POST`` (send back the response or the
    network failure), a :class:`Backoff` to sleep (send back ``None``) and,
    once, the :class:`DeviceAuthorization` to show to the person (send back
    ``None``). ``poll_request`` builds the poll from the authorization. Returns
    the tokens; raises as :func:`device_authorization_flow` and
    :func:`device_poll_flow`.
    """
    authorization = yield from device_authorization_flow(request, now=now)
    yield authorization
    return (
        yield from device_poll_flow(
            authorization,
            poll_request(authorization),
            max_transient_errors=max_transient_errors,
            clock=clock,
            now=now,
        )
    )
