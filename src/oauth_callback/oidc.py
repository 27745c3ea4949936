"""OpenID Connect ID Token validation, without I/O (OIDC Core 3.1.3.7).

:func:`id_token_flow` is a generator like :func:`~oauth_callback.protocol.discovery_flow`:
it yields the provider's ``jwks_uri`` to ``GET`` when the key set is not cached
(or the token names a key id the cached set lacks: the provider rotated its
keys, so the set is fetched again, once) and is sent back a
:class:`~oauth_callback.protocol.RawResponse` or the transport error as a
:class:`~oauth_callback.errors.DiscoveryError`. It returns the
:class:`~oauth_callback.models.Identity` the token names.

Signatures are verified by ``joserfc`` (the ``oidc`` extra, which importing this module needs:
``pip install 'oauth-callback[oidc]'``) with asymmetric algorithms only:
``none`` and the HMAC algorithms are refused. The claims are checked here:

1. ``iss`` equals the issuer discovery validated, exactly;
2. ``aud`` is, or contains, the client id; with several audiences ``azp``
   must be present; when present ``azp`` must be the client id;
3. ``exp`` is in the future and ``iat`` not in the future, both within
   ``leeway`` seconds (default 60) of the local clock;
4. ``nonce`` equals the one sent in the authorization request (constant-time
   compare) whenever one was sent;
5. ``sub`` is a non-empty string.

Any failure raises :class:`~oauth_callback.errors.IdTokenError` naming the
claim; no message quotes the token or a claim value other than ``iss``/``aud``.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Generator, Mapping
from typing import Any

from joserfc import jwk, jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from .errors import DiscoveryError, IdTokenError
from .models import Identity
from .protocol import RawResponse

__all__ = [
    "DEFAULT_LEEWAY",
    "ID_TOKEN_ALGORITHMS",
    "JWKS_MAX_AGE",
    "JwksCache",
    "default_jwks_cache",
    "id_token_flow",
    "parse_jwks",
    "validate_id_token",
    "wants_id_token",
]

#: Signature algorithms accepted on an ID Token (asymmetric only; never ``none`` or HS*).
ID_TOKEN_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
    "EdDSA", "Ed25519",
)
#: Seconds of clock difference tolerated on ``exp`` and ``iat``.
DEFAULT_LEEWAY = 60.0
#: Seconds a fetched key set is used before it is fetched again.
JWKS_MAX_AGE = 3600.0
_MAX_JWKS_BYTES = 1 << 20
_PRIVATE_PARAMS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def wants_id_token(scope: str | None) -> bool:
    """Whether a request for ``scope`` is an OpenID Connect one (``openid`` among the scopes)."""
    return bool(scope) and "openid" in (scope or "").split()


# --------------------------------------------------------------------------- key sets


def parse_jwks(body: bytes, uri: str) -> KeySet:
    """Parse a JWK Set document (RFC 7517 5). Raises :class:`DiscoveryError` naming ``uri``.

    Keys of a type joserfc does not know are skipped (RFC 7517 5); private
    parts, if a broken provider publishes them, are never used.
    """
    if len(body) > _MAX_JWKS_BYTES:
        raise DiscoveryError(f"the JWK Set at {uri} is larger than {_MAX_JWKS_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise DiscoveryError(f"the JWK Set at {uri} is not JSON") from None
    keys = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(keys, list) or not all(isinstance(k, Mapping) for k in keys):
        raise DiscoveryError(f"the JWK Set at {uri} has no 'keys' list")
    usable = []
    for key in keys:
        if key.get("kty") in (None, "oct") or key.get("use") not in (None, "sig"):
            continue  # symmetric keys never verify an ID Token here; "enc" keys never sign
        public = {k: v for k, v in key.items() if k not in _PRIVATE_PARAMS}
        try:
            usable.append(jwk.import_key(public))
        except (JoseError, ValueError, TypeError):
            continue  # one malformed or unknown key does not spoil the others
    if not usable:
        raise DiscoveryError(f"the JWK Set at {uri} holds no usable signing key")
    return KeySet(usable)


class JwksCache:
    """Key sets by ``jwks_uri``, each used for ``max_age`` seconds. Thread-safe.

    One process-wide instance (:func:`default_jwks_cache`) serves every client
    unless another is given.
    """

    def __init__(self, max_age: float = JWKS_MAX_AGE, *, clock: Any = time.monotonic) -> None:
        if max_age < 0:
            raise ValueError("max_age must be non-negative")
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._sets: dict[str, tuple[float, KeySet]] = {}

    def get(self, uri: str) -> KeySet | None:
        """The cached set of ``uri``, or ``None`` when absent or older than ``max_age``."""
        with self._lock:
            entry = self._sets.get(uri)
        if entry is None or self._clock() - entry[0] > self.max_age:
            return None
        return entry[1]

    def put(self, uri: str, keys: KeySet) -> None:
        """Remember ``keys`` as the current set of ``uri``."""
        with self._lock:
            self._sets[uri] = (self._clock(), keys)

    def clear(self) -> None:
        """Forget every set."""
        with self._lock:
            self._sets.clear()


_DEFAULT_CACHE = JwksCache()


def default_jwks_cache() -> JwksCache:
    """The process-wide :class:`JwksCache`."""
    return _DEFAULT_CACHE


# --------------------------------------------------------------------------- validation


class _UnknownKey(Exception):
    """The token's ``kid`` (or algorithm) matches no key of the set."""


def _header(id_token: str) -> Mapping[str, Any]:
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise IdTokenError(
            "the ID Token is not a signed JWT (JWS compact serialization); encrypted "
            "ID Tokens are not supported", claim="header")
    try:
        header: Mapping[str, Any] = jws.extract_compact(id_token.encode("ascii")).headers()
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise IdTokenError("the ID Token does not parse as a JWT", claim="header") from None
    alg = header.get("alg")
    if alg not in ID_TOKEN_ALGORITHMS:
        shown = alg if isinstance(alg, str) and len(alg) <= 20 else "?"
        raise IdTokenError(
            f"the ID Token is signed with {shown!r}; only asymmetric algorithms "
            f"({', '.join(ID_TOKEN_ALGORITHMS)}) are accepted", claim="header")
    if header.get("crit"):
        raise IdTokenError("the ID Token has critical header parameters this client does "
                           "not understand", claim="header")
    return header


def _verify(id_token: str, header: Mapping[str, Any], keys: KeySet) -> dict[str, Any]:
    kid = header.get("kid")
    alg = header["alg"]
    candidates = [
        k for k in keys
        if (kid is None or k.kid == kid)
        and (k.get("use") in (None, "sig"))
        and (k.get("alg") in (None, alg))
    ]
    if not candidates:
        raise _UnknownKey
    for key in candidates:
        try:
            obj = jws.deserialize_compact(id_token, key, algorithms=[alg])
        except BadSignatureError:
            continue
        except (JoseError, ValueError, TypeError):
            continue  # e.g. an RSA key offered for an EC algorithm
        try:
            claims = json.loads(obj.payload or b"")
        except (ValueError, RecursionError):
            raise IdTokenError("the ID Token's payload is not JSON", claim="payload") from None
        if not isinstance(claims, dict):
            raise IdTokenError("the ID Token's payload is not a JSON object", claim="payload")
        return claims
    raise IdTokenError(
        "the ID Token's signature does not verify against the provider's keys (jwks_uri); "
        "it may be forged", claim="signature")


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise IdTokenError(f"the ID Token has no numeric {name!r} claim", claim=name)
    return float(value)


def _check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: float,
) -> None:
    iss = claims.get("iss")
    if iss != issuer:
        shown = iss if isinstance(iss, str) else None
        raise IdTokenError(
            f"the ID Token was issued by {shown!r}, expected {issuer!r}", claim="iss")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise IdTokenError("the ID Token has no 'aud' claim", claim="aud")
    if client_id not in audiences:
        raise IdTokenError(
            f"the ID Token is meant for {audiences!r}, not for client {client_id!r}",
            claim="aud")
    azp = claims.get("azp")
    if azp is not None and azp != client_id:
        raise IdTokenError(
            f"the ID Token was issued to another party (azp), not to client {client_id!r}",
            claim="azp")
    if len(audiences) > 1 and azp is None:
        raise IdTokenError(
            "the ID Token has several audiences but no 'azp' claim", claim="azp")
    if _number(claims, "exp") <= now - leeway:
        raise IdTokenError("the ID Token has expired (exp)", claim="exp")
    if _number(claims, "iat") > now + leeway:
        raise IdTokenError("the ID Token was issued in the future (iat); check the clock",
                           claim="iat")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(
            got.encode("utf-8"), nonce.encode("utf-8")
        ):
            raise IdTokenError(
                "the ID Token's nonce does not match the one sent (possible replay)",
                claim="nonce")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise IdTokenError("the ID Token has no 'sub' claim", claim="sub")


def validate_id_token(
    id_token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
) -> Identity:
    """Validate ``id_token`` against ``keys`` and the rules in the module docstring.

    Returns the :class:`Identity` it names. Raises :class:`IdTokenError`; a key
    id not in ``keys`` is reported as a signature failure (use
    :func:`id_token_flow` to refetch a rotated key set).
    """
    try:
        return _validate(id_token, keys, issuer=issuer, client_id=client_id, nonce=nonce,
                         now=time.time() if now is None else now, leeway=leeway)
    except _UnknownKey:
        raise IdTokenError(
            "the ID Token is signed with a key the provider does not publish (kid)",
            claim="signature") from None


def _validate(
    id_token: str, keys: KeySet, *, issuer: str, client_id: str, nonce: str | None,
    now: float, leeway: float,
) -> Identity:
    claims = _verify(id_token, _header(id_token), keys)
    _check_claims(claims, issuer=issuer, client_id=client_id, nonce=nonce, now=now,
                  leeway=leeway)
    return Identity.from_claims(claims, source="id_token", issuer=issuer)


def id_token_flow(
    id_token: str,
    *,
    issuer: str,
    client_id: str,
    jwks_uri: str,
    nonce: str | None,
    cache: JwksCache | None = None,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
) -> Generator[str, RawResponse | DiscoveryError, Identity]:
    """Validate ``id_token``, fetching the provider's key set when needed.

    Yields ``jwks_uri`` to ``GET`` (send back the response, or a
    :class:`DiscoveryError` for a network failure) when ``cache`` (default:
    :func:`default_jwks_cache`) has no fresh set, and once more when the
    cached set lacks the token's key (key rotation). Returns the
    :class:`Identity`; raises :class:`IdTokenError`, or :class:`DiscoveryError`
    when the key set cannot be fetched or parsed.
    """
    cache = _DEFAULT_CACHE if cache is None else cache
    header = _header(id_token)  # a malformed token fails before any fetch
    keys = cache.get(jwks_uri)
    fetched = False
    while True:
        if keys is None:
            outcome = yield jwks_uri
            if isinstance(outcome, DiscoveryError):
                raise DiscoveryError(f"could not fetch the provider's keys: {outcome}")
            if outcome.status != 200:
                raise DiscoveryError(
                    f"the JWK Set at {jwks_uri} answered HTTP {outcome.status}")
            keys = parse_jwks(outcome.body, jwks_uri)
            cache.put(jwks_uri, keys)
            fetched = True
        try:
            claims = _verify(id_token, header, keys)
        except _UnknownKey:
            if fetched:
                raise IdTokenError(
                    "the ID Token is signed with a key the provider does not publish (kid)",
                    claim="signature") from None
            keys = None  # the provider rotated its keys: fetch the set again, once
            continue
        except IdTokenError as exc:
            if fetched or exc.claim != "signature":
                raise
            keys = None  # the provider may have rotated its keys: fetch the set again, once
            continue
        _check_claims(claims, issuer=issuer, client_id=client_id, nonce=nonce,
                      now=time.time() if now is None else now, leeway=leeway)
        return Identity.from_claims(claims, source="id_token", issuer=issuer)
