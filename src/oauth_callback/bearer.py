"""Using a Bearer token at a resource server (RFC 6750), without I/O.

This module decides; the HTTP auth objects (:mod:`oauth_callback.httpx_auth`,
:mod:`oauth_callback.requests_auth`) only carry out its decisions. It holds:

* :func:`parse_challenges` / :func:`bearer_challenge`: the ``WWW-Authenticate``
  header (RFC 9110 11.6.1) and its ``Bearer`` challenge (RFC 6750 3,
  ``resource_metadata`` of RFC 9728 5.1);
* :func:`is_token_rejection`: whether an answer means "this token is no longer
  good" (worth one refresh and one retry);
* :func:`bearer_flow`: the whole per-request behaviour, written once as a
  generator of effects that every client drives (sync and async alike):

  1. yield :class:`CurrentToken`: send back the :class:`~oauth_callback.models.Tokens`
     to use (the driver refreshes first when they expire within the margin);
  2. yield :class:`SendRequest`: send the request with its ``authorization``
     header, send back the response (anything with ``status_code`` and a
     case-insensitive ``headers`` mapping);
  3. if that answer is a token rejection: yield :class:`RefreshRejected`
     (send back the tokens after one refresh coordinated across processes;
     when another process already replaced the rejected token, its newer token
     without a new refresh), then, for a replayable request, one more
     :class:`SendRequest`. Its answer, whatever it is, ends the flow: a second
     ``401`` goes back to the caller, never into a loop.

  A refresh that answers the very token just rejected raises
  :class:`~oauth_callback.errors.UnchangedTokenError` (a retry would loop).

:func:`check_response` turns a final answer into the typed errors
(:class:`~oauth_callback.errors.TokenRejectedError`,
:class:`~oauth_callback.errors.InsufficientScopeError`) for callers that want
exceptions rather than status codes.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, TypeVar

from ._text import clip
from .errors import InsufficientScopeError, TokenRejectedError, UnchangedTokenError
from .models import Tokens

__all__ = [
    "BearerChallenge",
    "BearerFlow",
    "Challenge",
    "CurrentToken",
    "RefreshRejected",
    "SendRequest",
    "authorization_header",
    "bearer_challenge",
    "bearer_flow",
    "check_response",
    "is_token_rejection",
    "parse_challenges",
]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN})")
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_TOKEN68_RE = re.compile(r"\s*([A-Za-z0-9\-._~+/]+=*)\s*(?=,|$)")
_UNQUOTE_RE = re.compile(r"\\(.)")


class _Response(Protocol):
    """What the flow reads of an HTTP response (httpx, httpx2 and requests all fit)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...


R = TypeVar("R", bound=_Response)


# --------------------------------------------------------------------------- WWW-Authenticate


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: the scheme (lower case),
    its parameters (names lower case, values unquoted) or its ``token68``."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token68: str | None = None


def parse_challenges(value: str | None) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 9110 11.6.1) into its challenges.

    Several challenges, and several header lines joined with ``", "``, are
    split correctly; a malformed tail ends the parse (what was read before is
    kept). A parameter repeated in one challenge keeps its first value.
    """
    challenges: list[Challenge] = []
    if not value:
        return challenges
    pos, end = 0, len(value)
    while pos < end:
        scheme_match = _SCHEME_RE.match(value, pos)
        if scheme_match is None:
            break
        scheme = scheme_match.group(1).lower()
        pos = scheme_match.end()
        params: dict[str, str] = {}
        token68: str | None = None
        if pos < end and value[pos] in " \t":
            t68 = _TOKEN68_RE.match(value, pos)
            if t68 is not None and _PARAM_RE.match(value, pos) is None:
                token68 = t68.group(1)
                pos = t68.end()
            else:
                while True:
                    param = _PARAM_RE.match(value, pos)
                    if param is None:
                        break
                    name, raw = param.group(1).lower(), param.group(2)
                    if raw.startswith('"'):
                        raw = _UNQUOTE_RE.sub(r"\1", raw[1:-1])
                    params.setdefault(name, raw)
                    pos = param.end()
                    if pos >= end or value[pos] != ",":
                        break
                    # After a comma: another parameter, or the next challenge's scheme.
                    if _PARAM_RE.match(value, pos + 1) is None:
                        break
                    pos += 1
        challenges.append(Challenge(scheme, MappingProxyType(params), token68))
        while pos < end and value[pos] in " \t":
            pos += 1
        if pos < end and value[pos] != ",":
            break  # challenges are separated by commas: the rest is malformed
    return challenges


@dataclass(frozen=True)
class BearerChallenge:
    """The ``Bearer`` challenge of a resource server's answer (RFC 6750 3).

    ``error`` is ``invalid_request``, ``invalid_token``, ``insufficient_scope``
    or ``None`` (no error: the request carried no usable credentials);
    ``scope`` the scopes the resource needs, split on spaces;
    ``resource_metadata`` the RFC 9728 protected resource metadata URL. The
    provider texts are cleaned of control characters and clipped.
    """

    error: str | None = None
    error_description: str | None = None
    error_uri: str | None = None
    scope: tuple[str, ...] = ()
    realm: str | None = None
    resource_metadata: str | None = None
    params: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    @classmethod
    def from_challenge(cls, challenge: Challenge, secrets: Iterable[str] = ()) -> BearerChallenge:
        """``secrets`` (the access token that was sent) are redacted from the
        texts in every encoding: a hostile resource server may echo them."""
        p = challenge.params
        secrets = tuple(secrets)
        return cls(
            error=clip(p.get("error"), secrets),
            error_description=clip(p.get("error_description"), secrets),
            error_uri=clip(p.get("error_uri"), secrets),
            scope=tuple(p.get("scope", "").split()),
            realm=p.get("realm"),
            resource_metadata=p.get("resource_metadata"),
            params=p,
        )


def bearer_challenge(
    response_or_headers: Any, secrets: Iterable[str] = ()
) -> BearerChallenge | None:
    """The ``Bearer`` challenge of a response (httpx, httpx2, requests, or a
    headers mapping with case-insensitive ``get``), or ``None`` when there is none.

    ``secrets`` are redacted from its texts; for a response whose request is
    known (httpx, requests), the access token that request sent is too."""
    secrets = (*secrets, *_sent_token(response_or_headers))
    headers = getattr(response_or_headers, "headers", response_or_headers)
    value = headers.get("www-authenticate") if headers is not None else None
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if k.lower() == "www-authenticate"), None)
    for challenge in parse_challenges(value if isinstance(value, str) else None):
        if challenge.scheme == "bearer":
            return BearerChallenge.from_challenge(challenge, secrets)
    return None


def _sent_token(response: Any) -> tuple[str, ...]:
    """The Bearer token the response's request carried, if it can be known."""
    try:
        request = getattr(response, "request", None)
        value = request.headers.get("authorization") if request is not None else None
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError without a request
        return ()
    if isinstance(value, str) and value[:7].lower() == "bearer ":
        return (value[7:].strip(),)
    return ()


def is_token_rejection(status: int, headers: Any) -> bool:
    """Whether an answer says the token itself is no longer good: ``401`` with a
    ``Bearer`` challenge whose ``error`` is ``invalid_token`` or absent.

    A ``401`` without a ``Bearer`` challenge (another scheme, or none at all),
    ``invalid_request`` and ``insufficient_scope`` are not: a new token would
    not change them.
    """
    if status != 401:
        return False
    challenge = bearer_challenge(headers)
    return challenge is not None and challenge.error in (None, "invalid_token")


# --------------------------------------------------------------------------- the flow


@dataclass(frozen=True)
class CurrentToken:
    """Effect: the tokens to use now (refreshed first when they expire within
    the margin). Send back :class:`Tokens`."""


@dataclass(frozen=True, repr=False)
class RefreshRejected:
    """Effect: the resource server rejected ``rejected`` (an access token).
    Refresh once, coordinated across processes, unless the store already
    holds another token; send back the :class:`Tokens` to retry with."""

    rejected: str

    def __repr__(self) -> str:
        return "RefreshRejected(rejected=<redacted>)"


class SendRequest:
    """Effect: send the request with this ``Authorization`` header value; send
    back the response. (A slotted class, not a dataclass: it is made for every
    request, and this is the hot path.)"""

    __slots__ = ("authorization",)

    def __init__(self, authorization: str) -> None:
        self.authorization = authorization

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SendRequest):
            return NotImplemented
        return self.authorization == other.authorization

    def __hash__(self) -> int:
        return hash(self.authorization)

    def __repr__(self) -> str:
        return "SendRequest(authorization=<redacted>)"


BearerFlow: TypeAlias = Generator["CurrentToken | RefreshRejected | SendRequest", Any, None]

_CURRENT = CurrentToken()


def authorization_header(tokens: Tokens) -> str:
    """``Bearer <access token>`` (RFC 6750 2.1), whatever case ``token_type`` has."""
    return "Bearer " + tokens.access_token


def bearer_flow(*, replayable: bool = True) -> BearerFlow:
    """The per-request behaviour of every HTTP auth object (see the module docstring).

    ``replayable`` is ``False`` for a request whose body cannot be sent twice
    (a stream): a rejection then still refreshes the token (so the caller's
    next attempt works), but the request is not retried and its ``401`` is the
    answer.
    """
    tokens: Tokens = yield _CURRENT
    response: Any = yield SendRequest(authorization_header(tokens))
    if not is_token_rejection(response.status_code, response.headers):
        return
    renewed: Tokens = yield RefreshRejected(tokens.access_token)
    if renewed.access_token == tokens.access_token:
        raise UnchangedTokenError(
            "the resource server rejected the access token and the refresh answered the "
            "same token again; not retrying (it would loop)",
            status=401,
            challenge=bearer_challenge(response, (tokens.access_token,)),
        )
    if replayable:
        yield SendRequest(authorization_header(renewed))


def check_response(response: R) -> R:
    """Return ``response``, or raise the typed error its status means:
    :class:`~oauth_callback.errors.TokenRejectedError` for a ``401`` token
    rejection (the auth objects already refreshed and retried once),
    :class:`~oauth_callback.errors.InsufficientScopeError` (with ``.scope``)
    for a ``403`` ``insufficient_scope``. Every other answer is returned as is.
    """
    status = response.status_code
    if status == 401 and is_token_rejection(status, response.headers):
        challenge = bearer_challenge(response)
        raise TokenRejectedError(
            "the resource server rejected the access token (HTTP 401"
            + (f", {challenge.error}" if challenge and challenge.error else "")
            + ") after one refresh and one retry",
            status=status,
            challenge=challenge,
        )
    if status == 403:
        challenge = bearer_challenge(response)
        if challenge is not None and challenge.error == "insufficient_scope":
            needed = " ".join(challenge.scope) or "not said"
            raise InsufficientScopeError(
                f"the resource server needs more scope (HTTP 403 insufficient_scope; "
                f"scope: {clip(needed)}); log in again asking for it",
                status=status,
                challenge=challenge,
                scope=challenge.scope,
            )
    return response
