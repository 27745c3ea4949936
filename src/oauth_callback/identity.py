"""Who a login authenticated, without I/O: the ID Token, else userinfo.

:func:`identify_flow` is a generator of :class:`Fetch` effects (``GET`` the
URL with these headers; send back a :class:`~oauth_callback.protocol.RawResponse`
or a :class:`~oauth_callback.errors.DiscoveryError` for a network failure). It
returns the :class:`~oauth_callback.models.Identity`, or ``None`` when the
provider offers neither an ID Token nor userinfo.

1. When the login was an OpenID Connect one (:func:`oidc_nonce` gave a nonce:
   ``openid`` in the scope and the provider publishes a ``jwks_uri``), the
   token response must carry an ``id_token`` and it must validate
   (:mod:`oauth_callback.oidc`); otherwise
   :class:`~oauth_callback.errors.IdTokenError` and the caller stores nothing.
2. Otherwise, when the provider has a ``userinfo_endpoint``, its answer to
   the new access token names the account (a failure there only means the
   account stays unknown: it never fails a login).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import DiscoveryError, IdTokenError, ResourceAccessError
from .models import Identity, Tokens
from .pkce import generate_state
from .protocol import RawResponse, ServerMetadata

if TYPE_CHECKING:
    from .oidc import JwksCache

__all__ = [
    "Fetch",
    "IdentifyFlow",
    "UserinfoFlow",
    "identify_flow",
    "oidc_nonce",
    "userinfo_fetch",
    "userinfo_flow",
]


@dataclass(frozen=True, repr=False)
class Fetch:
    """An HTTP ``GET`` to perform. The ``repr`` never shows the headers (a Bearer token)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        return f"Fetch(url={self.url!r})"


IdentifyFlow = Generator[Fetch, "RawResponse | DiscoveryError", "Identity | None"]


def _wants_openid(scope: str | None) -> bool:
    return "openid" in (scope or "").split()


def oidc_nonce(scope: str | None, metadata: ServerMetadata | None) -> str | None:
    """A fresh ``nonce`` for the authorization request when the login is an OpenID
    Connect one (``openid`` requested from a provider with a ``jwks_uri``), else ``None``."""
    if not _wants_openid(scope) or metadata is None or metadata.jwks_uri is None:
        return None
    return generate_state()


def userinfo_fetch(userinfo_endpoint: str, access_token: str) -> Fetch:
    """The userinfo request (OIDC Core 5.3.1) with ``access_token`` as Bearer."""
    return Fetch(
        userinfo_endpoint,
        MappingProxyType(
            {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        ),
    )


#: The effects of :func:`userinfo_flow`: ``GET`` the :class:`Fetch`; send back the
#: response, or a :class:`~oauth_callback.errors.DiscoveryError` for a network failure.
UserinfoFlow = Generator[Fetch, "RawResponse | DiscoveryError", "dict[str, Any]"]


def userinfo_flow(userinfo_endpoint: str, access_token: str) -> UserinfoFlow:
    """Ask the userinfo endpoint (OIDC Core 5.3) who ``access_token`` belongs to.

    Returns the claims (a JSON object with a ``sub`` string). Raises
    :class:`~oauth_callback.errors.ResourceAccessError` when the provider
    refuses the token (401/403: revoked, expired or lacking scope),
    :class:`DiscoveryError` for a network failure, another status or a
    malformed answer. Messages never contain the token or the body.
    """
    outcome = yield userinfo_fetch(userinfo_endpoint, access_token)
    if isinstance(outcome, DiscoveryError):
        raise outcome
    if outcome.status in (401, 403):
        raise ResourceAccessError(
            f"the userinfo endpoint {userinfo_endpoint} refused the access token "
            f"(HTTP {outcome.status})", status=outcome.status)
    if outcome.status != 200:
        raise DiscoveryError(
            f"the userinfo endpoint {userinfo_endpoint} answered HTTP {outcome.status}")
    try:
        claims = json.loads(outcome.body)
    except (ValueError, RecursionError):
        claims = None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise DiscoveryError(
            f"the userinfo endpoint {userinfo_endpoint} answered no JSON object with a 'sub'")
    return claims


def identify_flow(
    tokens: Tokens,
    *,
    client_id: str,
    metadata: ServerMetadata | None,
    nonce: str | None,
    cache: JwksCache | None = None,
) -> IdentifyFlow:
    """Find out who ``tokens`` belong to; see the module docstring.

    ``nonce`` is what :func:`oidc_nonce` gave for the authorization request
    (``None``: not an OpenID Connect login). Raises :class:`IdTokenError`
    (missing or invalid ID Token of an OpenID Connect login) or
    :class:`DiscoveryError` (the provider's keys cannot be fetched).
    """
    if metadata is None:
        return None
    if nonce is not None and metadata.jwks_uri is not None:
        id_token = tokens.extra.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise IdTokenError(
                "the provider sent no ID Token although 'openid' was requested "
                "(OIDC Core 3.1.3.3)", claim="id_token")
        try:
            from . import oidc
        except ImportError:
            raise IdTokenError(
                "validating the ID Token needs joserfc: pip install 'oauth-callback[oidc]'",
                claim="signature") from None
        inner = oidc.id_token_flow(
            id_token, issuer=metadata.issuer, client_id=client_id,
            jwks_uri=metadata.jwks_uri, nonce=nonce, cache=cache,
        )
        try:
            url = next(inner)
            while True:
                url = inner.send((yield Fetch(url)))
        except StopIteration as stop:
            identity: Identity = stop.value
            return identity
    if metadata.userinfo_endpoint is None:
        return None
    try:
        claims = yield from userinfo_flow(metadata.userinfo_endpoint, tokens.access_token)
        return Identity.from_claims(claims, source="userinfo", issuer=metadata.issuer)
    except (DiscoveryError, ResourceAccessError, ValueError):
        return None  # the account stays unknown; the login itself succeeded
