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
from typing import TYPE_CHECKING

from .errors import DiscoveryError, IdTokenError
from .models import Identity, Tokens
from .pkce import generate_state
from .protocol import RawResponse, ServerMetadata

if TYPE_CHECKING:
    from .oidc import JwksCache

__all__ = ["Fetch", "IdentifyFlow", "identify_flow", "oidc_nonce", "userinfo_fetch"]


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


def _userinfo_identity(
    outcome: RawResponse | DiscoveryError, issuer: str | None
) -> Identity | None:
    if isinstance(outcome, DiscoveryError) or outcome.status != 200:
        return None
    try:
        claims = json.loads(outcome.body)
    except ValueError:
        return None
    if not isinstance(claims, Mapping):
        return None
    try:
        return Identity.from_claims(claims, source="userinfo", issuer=issuer)
    except ValueError:
        return None


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
    outcome = yield userinfo_fetch(metadata.userinfo_endpoint, tokens.access_token)
    return _userinfo_identity(outcome, metadata.issuer)
