"""The OAuth client protocol, without I/O: requests to build, responses to judge.

Everything here is pure: it builds URLs and token requests, parses metadata
and token responses, and validates callbacks. The network shells in
:mod:`oauth_callback.flow` drive it, sync and async alike, through two small
generators (like ``httpx`` auth flows):

* :func:`discovery_flow` yields the URLs to ``GET`` in order and is sent back
  a :class:`RawResponse` (or the transport error as a :class:`DiscoveryError`);
  it returns :class:`ServerMetadata`.
* :func:`token_flow` yields a :class:`TokenRequest` to ``POST`` (send back a
  :class:`RawResponse`, or a :class:`~oauth_callback.errors.TokenEndpointError`
  for a network failure) or a :class:`Backoff` to sleep (send back ``None``);
  it returns :class:`~oauth_callback.models.Tokens`.

No function puts a secret (token, client secret, code, verifier, ``state``)
into an exception message or a ``repr``. Response bodies are never quoted in
messages either: a malformed body may still hold a token.
"""

from __future__ import annotations

import base64
import email.utils
import hmac
import ipaddress
import json
import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, cast
from urllib.parse import parse_qsl, quote_plus, unquote_plus, urlencode, urlsplit, urlunsplit

from ._text import clip
from .errors import (
    DiscoveryError,
    InvalidClientError,
    IssuerMismatchError,
    OAuthError,
    OAuthStateError,
    TokenEndpointError,
)
from .models import Tokens, fingerprint

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AUTH_METHODS",
    "AuthMethod",
    "Backoff",
    "CallbackProblem",
    "CallbackResult",
    "ClientAuthentication",
    "RawResponse",
    "ServerMetadata",
    "TokenFlow",
    "TokenRequest",
    "JWT_BEARER_ASSERTION",
    "authorization_code_request",
    "build_authorization_url",
    "callback_problem",
    "check_callback",
    "choose_auth_method",
    "client_credentials_request",
    "default_auth_method",
    "discovery_flow",
    "discovery_urls",
    "is_retryable",
    "merge_refreshed",
    "parse_revocation_response",
    "parse_token_response",
    "refresh_request",
    "RevocationFlow",
    "revocation_flow",
    "revocation_request",
    "token_flow",
]

AuthMethod: TypeAlias = Literal[
    "none", "client_secret_basic", "client_secret_post", "private_key_jwt"
]
#: Client authentication methods supported at the token endpoint (RFC 6749 2.3.1,
#: RFC 7523 2.2 for ``private_key_jwt``).
AUTH_METHODS: tuple[str, ...] = (
    "none", "client_secret_basic", "client_secret_post", "private_key_jwt"
)
#: ``client_assertion_type`` of a JWT client assertion (RFC 7523 2.2).
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_LOOPBACK_NAMES = frozenset({"localhost"})
# Parameters build_authorization_url sets itself; ``extra_params`` may not override them.
_CORE_AUTHZ_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
    }
)


def _is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return bool(ipaddress.ip_address(host).is_loopback)
    except ValueError:
        return False


def _check_url(name: str, value: Any) -> str:
    """An absolute https URL (http only on loopback), or :class:`DiscoveryError`."""
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"authorization server metadata has no {name!r} URL")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise DiscoveryError(f"metadata field {name!r} is not a valid URL") from None
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and _is_loopback_host(parts.hostname):
        return value
    raise DiscoveryError(
        f"metadata field {name!r} must be an https URL (http only on loopback), got {value!r}"
    )


def _str_tuple(data: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DiscoveryError(f"metadata field {name!r} must be a list of strings")
    return tuple(value)


def _same_issuer(a: str, b: str) -> bool:
    # RFC 8414 3.3 asks for identical strings; a lone trailing slash is
    # tolerated because providers disagree about it (the origin and path are
    # still compared exactly).
    return a == b or a.removesuffix("/") == b.removesuffix("/")


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ServerMetadata:
    """Validated authorization server metadata (RFC 8414, or OIDC discovery).

    ``raw`` keeps the whole document. Build it with :meth:`from_json`, which
    validates; constructing it directly does not.
    """

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    jwks_uri: str | None = None
    scopes_supported: tuple[str, ...] | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    @classmethod
    def from_json(cls, data: Any, *, issuer: str) -> ServerMetadata:
        """Validate a metadata document fetched for ``issuer``.

        Raises :class:`DiscoveryError` when it is not a JSON object, its
        ``issuer`` differs from the one requested (RFC 8414 3.3; a trailing
        slash aside), an endpoint is missing or not https (http is accepted
        for loopback hosts only), or the server advertises PKCE methods
        without ``S256``.
        """
        if not isinstance(data, Mapping):
            raise DiscoveryError("authorization server metadata is not a JSON object")
        got = data.get("issuer")
        if not isinstance(got, str) or not got:
            raise DiscoveryError("authorization server metadata has no 'issuer'")
        if not _same_issuer(got, issuer):
            raise DiscoveryError(
                f"authorization server metadata names issuer {got!r}, but {issuer!r} was "
                "requested; refusing to use it (RFC 8414 3.3)"
            )
        challenge_methods = _str_tuple(data, "code_challenge_methods_supported")
        if challenge_methods is not None and "S256" not in challenge_methods:
            raise DiscoveryError(
                f"authorization server {got!r} does not support PKCE S256 "
                f"(code_challenge_methods_supported={list(challenge_methods)!r})"
            )
        optional = {}
        for name in (
            "registration_endpoint",
            "revocation_endpoint",
            "userinfo_endpoint",
            "device_authorization_endpoint",
            "jwks_uri",
        ):
            optional[name] = _check_url(name, data[name]) if data.get(name) else None
        iss_supported = data.get("authorization_response_iss_parameter_supported", False)
        return cls(
            issuer=_check_url("issuer", got),
            authorization_endpoint=_check_url(
                "authorization_endpoint", data.get("authorization_endpoint")
            ),
            token_endpoint=_check_url("token_endpoint", data.get("token_endpoint")),
            registration_endpoint=optional["registration_endpoint"],
            revocation_endpoint=optional["revocation_endpoint"],
            userinfo_endpoint=optional["userinfo_endpoint"],
            device_authorization_endpoint=optional["device_authorization_endpoint"],
            jwks_uri=optional["jwks_uri"],
            scopes_supported=_str_tuple(data, "scopes_supported"),
            code_challenge_methods_supported=challenge_methods,
            token_endpoint_auth_methods_supported=_str_tuple(
                data, "token_endpoint_auth_methods_supported"
            ),
            authorization_response_iss_parameter_supported=iss_supported is True,
            raw=MappingProxyType(dict(data)),
        )


def discovery_urls(issuer: str) -> list[str]:
    """The metadata URLs to try for ``issuer``, in order.

    1. RFC 8414 3.1: ``/.well-known/oauth-authorization-server`` inserted
       between the host and the issuer's path;
    2. OIDC with the same path insertion (only when the issuer has a path);
    3. OIDC Discovery 4: the issuer with ``/.well-known/openid-configuration``
       appended.

    Raises :class:`DiscoveryError` for an issuer that is not an absolute
    http(s) URL or that has a query or fragment (RFC 8414 2).
    """
    try:
        parts = urlsplit(issuer)
    except ValueError:
        raise DiscoveryError(f"issuer {issuer!r} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise DiscoveryError(f"issuer {issuer!r} must be an absolute https URL")
    if parts.query or parts.fragment or "?" in issuer or "#" in issuer:
        raise DiscoveryError(f"issuer {issuer!r} must not have a query or fragment")
    path = parts.path.rstrip("/")

    def at(new_path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, new_path, "", ""))

    urls = [at("/.well-known/oauth-authorization-server" + path)]
    if path:
        urls.append(at("/.well-known/openid-configuration" + path))
    urls.append(at(path + "/.well-known/openid-configuration"))
    return list(dict.fromkeys(urls))


@dataclass(frozen=True)
class RawResponse:
    """An HTTP response as the pure layer needs it. Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"RawResponse(status={self.status}, body=<{len(self.body)} bytes>)"


def discovery_flow(issuer: str) -> Generator[str, RawResponse | DiscoveryError, ServerMetadata]:
    """Yield each metadata URL to ``GET``; send back the response or a :class:`DiscoveryError`.

    The first ``200`` with a JSON body is validated (:meth:`ServerMetadata.from_json`)
    and returned; a document that fails validation raises at once (no other
    URL is tried). When every URL fails, raises :class:`DiscoveryError` naming
    each URL and what it answered.
    """
    failures: list[str] = []
    for url in discovery_urls(issuer):
        outcome = yield url
        if isinstance(outcome, DiscoveryError):
            failures.append(f"{url}: {outcome}")
            continue
        if outcome.status != 200:
            failures.append(f"{url}: HTTP {outcome.status}")
            continue
        try:
            data = json.loads(outcome.body)
        except (ValueError, RecursionError):
            failures.append(f"{url}: not JSON")
            continue
        return ServerMetadata.from_json(data, issuer=issuer)
    raise DiscoveryError(
        f"no authorization server metadata found for {issuer!r} (" + "; ".join(failures) + ")"
    )


# --------------------------------------------------------------------------- authorization


@dataclass(frozen=True, repr=False)
class CallbackResult:
    """The query parameters of the authorization callback.

    ``code``, ``state`` and ``iss`` (RFC 9207) are ``None`` when absent;
    ``params`` holds every query parameter (first value of each name),
    ``code`` and ``state`` included. The ``repr`` shows fingerprints, never
    the code or state.
    """

    code: str | None
    state: str | None
    iss: str | None
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CallbackResult:
        """The result of a callback whose query parameters are ``params``."""
        return cls(
            code=params.get("code"),
            state=params.get("state"),
            iss=params.get("iss"),
            params=MappingProxyType(dict(params)),
        )

    def __repr__(self) -> str:
        return (
            f"CallbackResult(code={fingerprint(self.code)}, state={fingerprint(self.state)}, "
            f"iss={self.iss!r}, params=<{', '.join(sorted(self.params))}>)"
        )

    __str__ = __repr__




def build_authorization_url(
    authorization_endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scope: str | Sequence[str] | None = None,
    resource: str | Sequence[str] | None = None,
    extra_params: Mapping[str, str] | None = None,
) -> str:
    """The authorization request URL (RFC 6749 4.1.1 with PKCE S256, RFC 7636 4.3).

    Always sends ``response_type=code`` and ``code_challenge_method=S256``;
    ``resource`` (RFC 8707) is repeated once per value. A query already on the
    endpoint is kept. Raises :class:`ValueError` if ``extra_params`` tries to
    override one of the parameters set here.
    """
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
    ]
    scope_text = _scope_text(scope)
    if scope_text:
        params.append(("scope", scope_text))
    params += [
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    params += [("resource", r) for r in _resources(resource)]
    for name, value in (extra_params or {}).items():
        if name in _CORE_AUTHZ_PARAMS:
            raise ValueError(f"extra_params may not set {name!r}; it has its own argument")
        params.append((name, value))
    parts = urlsplit(authorization_endpoint)
    query = parse_qsl(parts.query, keep_blank_values=True)
    return urlunsplit(parts._replace(query=urlencode(query + params), fragment=""))


def _scope_text(scope: str | Sequence[str] | None) -> str | None:
    if scope is None or isinstance(scope, str):
        return scope or None
    return " ".join(scope) or None


def _resources(resource: str | Sequence[str] | None) -> list[str]:
    if resource is None:
        return []
    if isinstance(resource, str):
        return [resource]
    return list(resource)


#: What can be wrong with a callback (:func:`callback_problem`).
CallbackProblem: TypeAlias = "OAuthError | OAuthStateError | IssuerMismatchError"


def callback_problem(
    result: CallbackResult,
    expected_state: str | None,
    expected_issuer: str | None = None,
    *,
    iss_required: bool = False,
) -> CallbackProblem | None:
    """The one validation of an authorization callback: what is wrong with it, or ``None``.

    Checked in this order (the first failure is the answer):

    1. ``state`` (when ``expected_state`` is given) must be present and equal
       it (constant-time compare), else :class:`OAuthStateError`. Checked
       before ``error``: a page that sends the browser to our port without the
       state cannot end the login with text of its choosing.
    2. RFC 9207 (when ``expected_issuer`` is given): a present ``iss`` must
       equal it, and with ``iss_required`` (the server advertises
       ``authorization_response_iss_parameter_supported``) it must be present,
       else :class:`IssuerMismatchError` (possible mix-up attack). With
       ``expected_issuer=None`` (endpoints configured by hand, or the loopback
       server, which knows no issuer) ``iss`` is not checked.
    3. An ``error`` parameter is the provider's :class:`OAuthError`.

    :class:`~oauth_callback.loopback.CallbackServer` uses the verdict to
    choose the page it shows; :func:`check_callback` raises it.
    """
    if expected_state is not None:
        state = result.state
        if state is None:
            return OAuthStateError(
                "the callback carries no state although one was sent (possible CSRF)"
            )
        if not hmac.compare_digest(state.encode("utf-8"), expected_state.encode("utf-8")):
            return OAuthStateError(
                "the callback's state does not match the one sent (possible CSRF); "
                "start the authorization again"
            )
    if expected_issuer is not None:
        if result.iss is None:
            if iss_required:
                return IssuerMismatchError(
                    f"the authorization response carries no 'iss' although {expected_issuer!r} "
                    "advertises it (RFC 9207); possible mix-up attack"
                )
        elif result.iss != expected_issuer:
            return IssuerMismatchError(
                f"the authorization response came from issuer {result.iss!r}, expected "
                f"{expected_issuer!r} (RFC 9207); possible mix-up attack"
            )
    params = result.params
    if "error" in params:
        return OAuthError(
            clip(params["error"]) or "unknown_error",
            clip(params.get("error_description")),
            clip(params.get("error_uri")),
        )
    return None


def check_callback(
    result: CallbackResult,
    expected_state: str,
    expected_issuer: str | None,
    *,
    iss_required: bool = False,
) -> str:
    """Validate an authorization callback and return its ``code``.

    Raises what :func:`callback_problem` finds (:class:`OAuthStateError` for a
    state mismatch, :class:`IssuerMismatchError` for an issuer mismatch,
    :class:`OAuthError` for an ``error``), and
    :class:`OAuthError` ``invalid_request`` for a callback without ``code``.
    """
    problem = callback_problem(
        result, expected_state, expected_issuer, iss_required=iss_required
    )
    if problem is not None:
        raise problem
    if not result.code:
        raise OAuthError("invalid_request", "the authorization callback carried no code")
    return result.code


# --------------------------------------------------------------------------- token requests


_SECRET_FIELDS = ("code", "code_verifier", "refresh_token", "client_secret",
                  "client_assertion", "assertion", "password", "device_code", "token")


@dataclass(frozen=True, repr=False)
class TokenRequest:
    """A ``POST`` to the token endpoint: ``url``, form fields and headers.

    The body is ``application/x-www-form-urlencoded`` (:attr:`body`); a
    tuple value is sent as a repeated field. The ``repr`` names the form fields but shows no value.
    """

    url: str
    form: Mapping[str, str | tuple[str, ...]]
    headers: Mapping[str, str]

    @property
    def body(self) -> bytes:
        """The encoded form; a tuple value repeats the field (several ``resource``)."""
        return urlencode(list(self.form.items()), doseq=True).encode("ascii")

    @property
    def grant_type(self) -> str:
        """The ``grant_type`` field."""
        value = self.form.get("grant_type", "")
        return value if isinstance(value, str) else value[0]

    def secrets(self) -> tuple[str, ...]:
        """The secret values this request carries (form fields and Basic credentials)."""
        found: list[str] = []
        for name in _SECRET_FIELDS:
            value = self.form.get(name)
            if isinstance(value, str):
                found.append(value)
        authorization = next(
            (v for k, v in self.headers.items() if k.lower() == "authorization"), ""
        )
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "basic" and credentials:
            found.append(credentials)
            try:
                decoded = base64.b64decode(credentials).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            _client_id, _, secret = decoded.partition(":")
            if secret:
                found.append(secret)
                found.append(unquote_plus(secret))
        return tuple(found)

    def __repr__(self) -> str:
        return f"TokenRequest(url={self.url!r}, fields={sorted(self.form)!r})"

    __str__ = __repr__


class _ClientId(TypedDict):
    client_id: str


class ClientAuthentication(_ClientId, total=False):
    """How a client authenticates a form ``POST`` to the token endpoint (and to the
    device authorization and revocation endpoints, which speak its protocol): the
    keyword arguments every request builder of this module (and of
    :mod:`oauth_callback.device`) takes.

    ``client_id`` (required); ``client_secret``; ``auth_method`` (``None`` or left
    out: :func:`default_auth_method`); ``client_assertion``, the signed JWT of
    ``private_key_jwt`` (a fresh one per request). A builder raises
    :class:`ValueError` for an unknown method or one without what it needs (a
    secret, an assertion).
    """

    client_secret: str | None
    auth_method: str | None
    client_assertion: str | None


def default_auth_method(client_secret: str | None) -> AuthMethod:
    """``none`` for a public client, ``client_secret_basic`` when there is a secret."""
    return "none" if client_secret is None else "client_secret_basic"


def choose_auth_method(
    *,
    client_secret: str | None = None,
    private_key: bool = False,
    supported: Sequence[str] | None = None,
    explicit: str | None = None,
) -> AuthMethod:
    """The token endpoint authentication method for a client.

    1. ``explicit`` (``token_endpoint_auth_method=`` / ``--auth-method``) wins;
       it must be one of :data:`AUTH_METHODS` and have what it needs (a secret,
       or a private key for ``private_key_jwt``), else :class:`ValueError`.
    2. A private key means ``private_key_jwt`` (RFC 7523).
    3. No secret means ``none`` (a public client).
    4. With a secret: ``client_secret_basic`` (RFC 6749 2.3.1: every server
       must support it; RFC 7591's default), unless the server's
       ``token_endpoint_auth_methods_supported`` (``supported``) lists
       ``client_secret_post`` and not Basic.
    """
    if explicit is not None:
        if explicit not in AUTH_METHODS:
            raise ValueError(
                f"unsupported token_endpoint_auth_method {explicit!r}; use one of {AUTH_METHODS}"
            )
        if explicit == "private_key_jwt" and not private_key:
            raise ValueError("token_endpoint_auth_method 'private_key_jwt' needs a private key")
        if explicit in ("client_secret_basic", "client_secret_post") and not client_secret:
            raise ValueError(f"token_endpoint_auth_method {explicit!r} needs a client_secret")
        return cast(AuthMethod, explicit)
    if private_key:
        return "private_key_jwt"
    if not client_secret:
        return "none"
    if (
        supported is not None
        and "client_secret_basic" not in supported
        and "client_secret_post" in supported
    ):
        return "client_secret_post"
    return "client_secret_basic"


def _token_request(
    url: str,
    form: dict[str, str],
    *,
    scope: str | Sequence[str] | None = None,
    resource: str | Sequence[str] | None,
    client_id: str,
    client_secret: str | None = None,
    auth_method: str | None = None,
    client_assertion: str | None = None,
) -> TokenRequest:
    """A form ``POST`` to ``url`` of the token endpoint's protocol: ``form``, plus
    ``scope`` (space-joined) when given, the client authentication
    (:class:`ClientAuthentication`) and ``resource`` (RFC 8707, repeated)."""
    scope_text = _scope_text(scope)
    if scope_text:
        form["scope"] = scope_text
    method = auth_method or default_auth_method(client_secret)
    if method not in AUTH_METHODS:
        raise ValueError(
            f"unsupported token_endpoint_auth_method {method!r}; use one of {AUTH_METHODS}"
        )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "Cache-Control": "no-store",
    }
    if method == "private_key_jwt":
        if not client_assertion:
            raise ValueError("token_endpoint_auth_method 'private_key_jwt' needs a client "
                             "assertion")
    elif method != "none" and not client_secret:
        raise ValueError(f"token_endpoint_auth_method {method!r} needs a client_secret")
    if method == "private_key_jwt":
        assert client_assertion is not None
        # RFC 7523 2.2 (client_id is optional there; RFC 6749 3.2.1 lets us send it).
        form["client_id"] = client_id
        form["client_assertion_type"] = JWT_BEARER_ASSERTION
        form["client_assertion"] = client_assertion
    elif method == "client_secret_basic":
        assert client_secret is not None
        # RFC 6749 2.3.1: form-urlencode id and secret, then base64 "id:secret".
        pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    elif method == "client_secret_post":
        assert client_secret is not None
        form["client_id"] = client_id
        form["client_secret"] = client_secret
    else:
        form["client_id"] = client_id
    resources = _resources(resource)
    full: dict[str, str | tuple[str, ...]] = dict(form)
    if resources:
        full["resource"] = resources[0] if len(resources) == 1 else tuple(resources)
    return TokenRequest(url, MappingProxyType(full), MappingProxyType(headers))


def authorization_code_request(
    token_endpoint: str,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    resource: str | Sequence[str] | None = None,
    **client: Unpack[ClientAuthentication],
) -> TokenRequest:
    """The ``authorization_code`` grant request (RFC 6749 4.1.3, RFC 7636 4.5).

    ``client`` is the :class:`ClientAuthentication` (``client_id``,
    ``client_secret``, ``auth_method``, ``client_assertion``). Raises
    :class:`ValueError` for an unknown method or one without what it needs (a
    secret, an assertion).
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    return _token_request(token_endpoint, form, resource=resource, **client)


def refresh_request(
    token_endpoint: str,
    *,
    refresh_token: str,
    scope: str | Sequence[str] | None = None,
    resource: str | Sequence[str] | None = None,
    **client: Unpack[ClientAuthentication],
) -> TokenRequest:
    """The ``refresh_token`` grant request (RFC 6749 6).

    ``client`` and the errors as :func:`authorization_code_request`.
    """
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return _token_request(token_endpoint, form, scope=scope, resource=resource, **client)


def client_credentials_request(
    token_endpoint: str,
    *,
    scope: str | Sequence[str] | None = None,
    resource: str | Sequence[str] | None = None,
    **client: Unpack[ClientAuthentication],
) -> TokenRequest:
    """The ``client_credentials`` grant request (RFC 6749 4.4.2).

    The client authenticates with ``client_secret_basic`` (the default with a
    secret), ``client_secret_post``, or ``private_key_jwt`` with
    ``client_assertion`` (a fresh one per request: see
    :func:`oauth_callback.assertion.client_assertion`). Raises
    :class:`ValueError` for a public client (``none``: RFC 6749 4.4 is for
    confidential clients only), an unknown method, or one without what it needs.
    """
    method = client.get("auth_method") or (
        "private_key_jwt" if client.get("client_assertion")
        else default_auth_method(client.get("client_secret"))
    )
    if method == "none":
        raise ValueError(
            "the client_credentials grant needs an authenticated client "
            "(a client secret or a private key)"
        )
    form = {"grant_type": "client_credentials"}
    client["auth_method"] = method
    return _token_request(token_endpoint, form, scope=scope, resource=resource, **client)


# --------------------------------------------------------------------------- revocation (RFC 7009)

#: The ``token_type_hint`` values of RFC 7009 2.1.
TOKEN_TYPE_HINTS: tuple[str, ...] = ("refresh_token", "access_token")


def revocation_request(
    revocation_endpoint: str,
    *,
    token: str,
    token_type_hint: str | None = None,
    **client: Unpack[ClientAuthentication],
) -> TokenRequest:
    """A token revocation request (RFC 7009 2.1).

    The client authenticates as it does at the token endpoint (``auth_method``
    ``None`` means :func:`default_auth_method`; a public client sends its
    ``client_id``). Revoking a refresh token also revokes the access tokens of
    its grant at servers that support it (RFC 7009 2.1). Raises
    :class:`ValueError` for an unknown hint or auth method, or a secret-based
    method without a secret.
    """
    if token_type_hint is not None and token_type_hint not in TOKEN_TYPE_HINTS:
        raise ValueError(f"token_type_hint must be one of {TOKEN_TYPE_HINTS}")
    if not token:
        raise ValueError("token must be a non-empty string")
    form = {"token": token}
    if token_type_hint is not None:
        form["token_type_hint"] = token_type_hint
    return _token_request(revocation_endpoint, form, resource=None, **client)


def _json_object(body: bytes) -> Mapping[str, Any] | None:
    """The JSON object ``body`` holds; ``None`` when it is empty, not JSON or not an object."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, Mapping) else None


def _error_answer(
    data: Mapping[str, Any], secrets: Iterable[str], kind: type[OAuthError] = OAuthError
) -> OAuthError:
    """The :class:`OAuthError` (or ``kind``) an RFC 6749 5.2 error object ``data``
    stands for, the provider's text clipped and with ``secrets`` redacted."""
    return kind(
        clip(data.get("error"), secrets) or "unknown_error",
        clip(data.get("error_description"), secrets),
        clip(data.get("error_uri"), secrets),
    )


def parse_revocation_response(
    status: int, headers: Mapping[str, str], body: bytes, *, secrets: Iterable[str] = ()
) -> None:
    """Judge a revocation response (RFC 7009 2.2).

    Returns for ``200``: the token is revoked, or was already invalid (which
    the server does not tell apart, on purpose). Raises :class:`OAuthError`
    for an error object (``unsupported_token_type``, ``invalid_client``, ...);
    :class:`TokenEndpointError` (``status_code`` and ``retry_after`` set) for
    a 5xx, 429 or any other status, so :func:`is_retryable` applies as at the
    token endpoint. Messages never quote the body.
    """
    if status == 200:
        return
    data = _json_object(body)
    error = data.get("error") if data is not None else None
    if isinstance(error, str) and error and 400 <= status < 500 and status != 429:
        assert data is not None
        raise _error_answer(data, secrets)
    detail = f" ({clip(error, secrets)})" if isinstance(error, str) and error else ""
    raise TokenEndpointError(
        f"revocation endpoint answered HTTP {status}{detail}",
        status_code=status,
        retry_after=_retry_after(headers) if status >= 500 or status == 429 else None,
    )


#: The effects of :func:`revocation_flow`: the request to ``POST``; send back the
#: :class:`RawResponse` or a :class:`TokenEndpointError` for a network failure.
RevocationFlow: TypeAlias = Generator[TokenRequest, "RawResponse | TokenEndpointError", None]


def revocation_flow(request: TokenRequest) -> RevocationFlow:
    """Send one revocation request (RFC 7009 2.1) and judge the answer.

    Yields ``request`` once; returns when the token is revoked (or was already
    invalid); raises as :func:`parse_revocation_response`, or the
    :class:`TokenEndpointError` sent back for a network failure. Not retried:
    a logout reports the failure and goes on locally.
    """
    outcome = yield request
    if isinstance(outcome, TokenEndpointError):
        raise TokenEndpointError(
            str(outcome).replace("the token endpoint", "the revocation endpoint", 1),
            status_code=outcome.status_code,
        )
    parse_revocation_response(
        outcome.status, outcome.headers, outcome.body, secrets=request.secrets()
    )


# --------------------------------------------------------------------------- token responses


def _content_type(headers: Mapping[str, str]) -> str:
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return ""


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    secrets: Iterable[str] = (),
) -> Tokens:
    """Judge a token endpoint response (RFC 6749 5.1 / 5.2).

    Returns :class:`Tokens` for a 2xx JSON object with an ``access_token``.
    Raises :class:`OAuthError` for an RFC 6749 5.2 error object (``error``
    string) with a 4xx status, or with a 2xx status (some providers do that);
    :class:`TokenEndpointError` (``status_code`` set) for a 5xx or 429, for a
    body that is not a JSON object, or for a success missing
    ``access_token`` or with malformed fields. Messages never quote the body;
    provider text (``error``, ``error_description``, ``error_uri``) is shown
    with ``secrets`` (what the request sent) redacted.
    """
    data = _json_object(body)
    if status >= 500 or status == 429:
        error = data.get("error") if data is not None else None
        detail = f" ({clip(error, secrets)})" if isinstance(error, str) else ""
        raise TokenEndpointError(
            f"token endpoint answered HTTP {status}{detail}",
            status_code=status,
            retry_after=_retry_after(headers),
        )
    if data is None:
        kind = _content_type(headers) or "no content type"
        raise TokenEndpointError(
            f"token endpoint answered HTTP {status} with a body that is not a JSON object "
            f"({kind}, {len(body)} bytes)",
            status_code=status,
        )
    error = data.get("error")
    if isinstance(error, str) and error and (400 <= status < 500 or 200 <= status < 300):
        raise _error_answer(
            data, secrets, InvalidClientError if error == "invalid_client" else OAuthError
        )
    if not 200 <= status < 300:
        raise TokenEndpointError(
            f"token endpoint answered HTTP {status} without an OAuth error object",
            status_code=status,
        )
    try:
        return Tokens.from_response(data, now=now)
    except ValueError as exc:
        # Tokens.from_response names the field, never its value.
        raise TokenEndpointError(
            f"malformed token response: {exc}", status_code=status
        ) from None


def merge_refreshed(previous: Tokens | None, new: Tokens, *, sent: str | None = None) -> Tokens:
    """The tokens to keep after a refresh answered ``new``.

    RFC 6749 6: a refresh response may omit ``refresh_token`` (the one sent,
    ``sent``, stays valid; else the one of ``previous``) and ``scope``
    (unchanged: the one of ``previous``). The one place that rule lives.
    """
    changes: dict[str, Any] = {}
    kept = sent or (previous.refresh_token if previous is not None else None)
    if new.refresh_token is None and kept is not None:
        changes["refresh_token"] = kept
    if new.scope is None and previous is not None and previous.scope is not None:
        changes["scope"] = previous.scope
    return new.replace(**changes) if changes else new


#: The longest ``Retry-After`` the refresh honours; a longer one ends the retries.
MAX_RETRY_AFTER = 30.0


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 10.2.3: delta-seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def is_retryable(error: BaseException) -> bool:
    """Whether a token request that failed with ``error`` may be sent again.

    True for :class:`TokenEndpointError` without a status (network failure),
    with a 5xx status or 429. Everything else, OAuth errors included, is final.
    """
    if not isinstance(error, TokenEndpointError):
        return False
    code = error.status_code
    return code is None or code >= 500 or code == 429


@dataclass(frozen=True)
class Backoff:
    """A pause the driver of :func:`token_flow` performs before the next attempt."""

    seconds: float


TokenFlow: TypeAlias = Generator[
    "TokenRequest | Backoff", "RawResponse | TokenEndpointError | None", Tokens
]


def backoff_delays(max_retries: int, backoff: float) -> Iterable[float]:
    """``backoff * 2**n`` for n in ``0..max_retries-1``, each capped at 30 s."""
    for n in range(max_retries):
        yield min(backoff * (2**n), 30.0)


def token_flow(
    request: TokenRequest | Callable[[], TokenRequest],
    *,
    max_retries: int = 0,
    backoff: float = 0.2,
    previous: Tokens | None = None,
    clock: Any = time.time,
) -> TokenFlow:
    """Send ``request``; retry what :func:`is_retryable` allows, with exponential backoff.

    ``request`` may be a function building a fresh request for each attempt
    (a ``private_key_jwt`` assertion is single use: its ``jti`` must not repeat).

    Yields the request (send back a :class:`RawResponse`, or a
    :class:`TokenEndpointError` without status for a network failure) and, between
    attempts, a :class:`Backoff` (send back ``None``). At most
    ``1 + max_retries`` requests are yielded. Returns the tokens, merged by
    :func:`merge_refreshed` with ``previous`` and the refresh token the request
    sent. Raises the last :class:`TokenEndpointError` once retries are exhausted, and
    :class:`OAuthError` at once.
    """
    if max_retries < 0 or not math.isfinite(backoff) or backoff < 0:
        raise ValueError("max_retries and backoff must be non-negative")
    delays = iter(backoff_delays(max_retries, backoff))
    while True:
        current = request() if callable(request) else request
        sent_at = clock()
        outcome = yield current
        try:
            if outcome is None:
                raise TypeError("token_flow expects a RawResponse or a TokenEndpointError")
            if isinstance(outcome, TokenEndpointError):
                raise outcome
            tokens = parse_token_response(
                outcome.status, outcome.headers, outcome.body, now=sent_at,
                secrets=current.secrets(),
            )
        except TokenEndpointError as exc:
            delay = next(delays, None)
            if delay is None or not is_retryable(exc):
                raise
            if exc.retry_after is not None:  # the server said when (RFC 9110)
                if exc.retry_after > MAX_RETRY_AFTER:
                    raise
                delay = max(delay, exc.retry_after)
            yield Backoff(delay)
            continue
        sent = current.form.get("refresh_token")
        return merge_refreshed(previous, tokens, sent=sent if isinstance(sent, str) else None)
