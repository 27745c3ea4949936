"""Immutable values: :class:`Tokens`, :class:`ClientInfo`, :class:`OAuthSession`, :class:`Identity`.

Each value converts to and from a JSON *record* in the npm ``oauth-callback``
package's camelCase shape (``accessToken``, ``expiresAt`` in Unix
milliseconds, ...), which every store backend persists. Fields the record
carries that this version does not know are kept in ``extra`` and written
back unchanged.

No ``repr``/``str`` of these values shows a secret: tokens, client secrets,
PKCE verifiers and ``state`` appear as a short SHA-256 fingerprint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ._lazy import TYPE_CHECKING
from ._value import field, replace, valueclass

if TYPE_CHECKING:
    from typing import Any, TypeAlias

__all__ = ["ClientInfo", "Identity", "OAuthSession", "Tokens", "fingerprint"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def fingerprint(secret: str | None) -> str:
    """A short, non-reversible label for a secret, safe to log: ``'sha256:1a2b3c4d'``."""
    if secret is None:
        return "None"
    import hashlib  # on first use: loading OpenSSL costs start-up time

    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def _freeze(extra: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not extra:
        return _EMPTY
    return MappingProxyType(dict(extra))


_INF = float("inf")


def _finite(number: float) -> bool:
    """``math.isfinite`` (not NaN, not infinite) without loading the ``math`` extension
    module at start-up."""
    return -_INF < number < _INF


def _opt_str(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, not {type(value).__name__}")
    return value


def _opt_number(record: Mapping[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field {name!r} must be a finite number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"field {name!r} must be a finite number") from None
    if not _finite(number):
        raise ValueError(f"field {name!r} must be a finite number")
    return number


#: How a value's optional fields are stored: ``(attribute, record name, reader)``;
#: the reader (:func:`_opt_str`, :func:`_opt_number`) validates the record's value.
_Fields: TypeAlias = "tuple[tuple[str, str, Callable[[Mapping[str, Any], str], Any]], ...]"


def _required_text(record: Any, kind: str, name: str) -> str:
    """The non-empty string ``name`` a ``kind`` record must have (``ValueError`` naming
    it, or saying the record is not a JSON object)."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{kind} record must be a JSON object")
    value = record.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} record has no {name!r} string")
    return value


def _names(fields: _Fields) -> tuple[str, ...]:
    return tuple(name for _attr, name, _read in fields)


def _read_fields(
    record: Mapping[str, Any], fields: _Fields, known: tuple[str, ...]
) -> dict[str, Any]:
    """The constructor arguments ``fields`` name, read from ``record``, and ``extra``:
    every field of the record that is not ``known`` (kept and written back unchanged)."""
    values: dict[str, Any] = {attr: read(record, name) for attr, name, read in fields}
    values["extra"] = {k: v for k, v in record.items() if k not in known}
    return values


def _write_fields(record: dict[str, Any], value: Any, fields: _Fields) -> None:
    """Put the ``fields`` of ``value`` that are not ``None`` in ``record``."""
    for attr, name, _read in fields:
        if (item := getattr(value, attr)) is not None:
            record[name] = item


def _with_extra(record: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with the ``extra`` fields it does not have itself."""
    record.update((k, v) for k, v in extra.items() if k not in record)
    return record


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# --------------------------------------------------------------------------- Tokens

_TOKEN_FIELDS = ("accessToken", "refreshToken", "expiresAt", "scope", "tokenType", "expiresIn")
# Fields of an RFC 6749 token response that Tokens models directly.
_RESPONSE_FIELDS = ("access_token", "refresh_token", "expires_in", "scope", "token_type")


@valueclass(repr=False)
class Tokens:
    """An access token and what came with it.

    ``expires_at`` is absolute, in Unix epoch **seconds** (like ``time.time()``);
    ``None`` means the server did not say. ``lifetime`` is how long the token
    lived when it was issued (the response's ``expires_in``, seconds; ``None``
    when unknown, e.g. a record written before it was kept): it bounds the
    refresh margin (:meth:`needs_refresh`). ``extra`` holds every other field
    (``id_token``, provider-specific fields, unknown record fields) and survives
    a store round trip untouched.
    """

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None
    scope: str | None = None
    token_type: str = "Bearer"
    extra: Mapping[str, Any] = field(default_factory=dict)
    lifetime: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.access_token, str) or not self.access_token:
            raise ValueError("access_token must be a non-empty string")
        if self.expires_at is not None:
            # The record keeps milliseconds; normalise so a round trip is exact.
            object.__setattr__(self, "expires_at", _ms(self.expires_at) / 1000.0)
        object.__setattr__(self, "extra", _freeze(self.extra))

    # -- construction ------------------------------------------------------

    @classmethod
    def from_response(cls, response: Mapping[str, Any], *, now: float | None = None) -> Tokens:
        """Build from an RFC 6749 section 5.1 token response.

        ``expires_in`` (seconds, relative) becomes an absolute ``expires_at``
        measured from ``now`` (default ``time.time()``). Raises ``ValueError``
        naming the field when the response is malformed.
        """
        if not isinstance(response, Mapping):
            raise ValueError("token response must be a JSON object")
        access_token = response.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("token response has no 'access_token' string")
        expires_at: float | None = None
        expires_in = response.get("expires_in")
        if expires_in is not None:
            try:
                seconds = float(expires_in)
            except (TypeError, ValueError, OverflowError):
                raise ValueError("token response field 'expires_in' is not a number") from None
            if isinstance(expires_in, bool) or not _finite(seconds):
                raise ValueError("token response field 'expires_in' is not a number")
            expires_at = (time.time() if now is None else now) + seconds
        token_type = response.get("token_type") or "Bearer"
        if not isinstance(token_type, str):
            raise ValueError("token response field 'token_type' must be a string")
        if token_type.lower() == "bearer":
            token_type = "Bearer"
        extra = {k: v for k, v in response.items() if k not in _RESPONSE_FIELDS}
        return cls(
            access_token=access_token,
            refresh_token=_opt_str(response, "refresh_token"),
            expires_at=expires_at,
            scope=_opt_str(response, "scope"),
            token_type=token_type,
            extra=extra,
            lifetime=None if expires_at is None else max(seconds, 0.0),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Tokens:
        """Parse a stored record (npm shape). Raises ``ValueError`` naming the field."""
        access_token = _required_text(record, "token", "accessToken")
        expires_ms = _opt_number(record, "expiresAt")
        lifetime = _opt_number(record, "expiresIn")
        return cls(
            access_token=access_token,
            refresh_token=_opt_str(record, "refreshToken"),
            expires_at=None if expires_ms is None else expires_ms / 1000.0,
            scope=_opt_str(record, "scope"),
            token_type=_opt_str(record, "tokenType") or "Bearer",
            extra={k: v for k, v in record.items() if k not in _TOKEN_FIELDS},
            lifetime=None if lifetime is None or lifetime < 0 else float(lifetime),
        )

    def to_record(self) -> dict[str, Any]:
        """The stored record (npm shape): ``expiresAt`` in integer Unix milliseconds."""
        record: dict[str, Any] = {"accessToken": self.access_token}
        if self.refresh_token is not None:
            record["refreshToken"] = self.refresh_token
        if self.expires_at is not None:
            record["expiresAt"] = _ms(self.expires_at)
        if self.scope is not None:
            record["scope"] = self.scope
        if self.token_type != "Bearer":
            record["tokenType"] = self.token_type
        if self.lifetime is not None:
            life = self.lifetime
            record["expiresIn"] = int(life) if life.is_integer() else life
        return _with_extra(record, self.extra)

    # -- queries -----------------------------------------------------------

    def is_expired(self, skew: float = 60.0, *, now: float | None = None) -> bool:
        """True when the token expires within ``skew`` seconds. Unknown expiry: False."""
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) + skew >= self.expires_at

    def refresh_margin(self, skew: float = 60.0) -> float:
        """How long before expiry to refresh: ``min(skew, lifetime / 2)``.

        Bounded by the token's own lifetime, so a token that lives less than
        ``skew`` (20 s against the default 60 s) is used for half its life
        instead of being refreshed again by every caller. Unknown lifetime:
        ``skew``.
        """
        if self.lifetime is None:
            return skew
        return min(skew, self.lifetime / 2)

    def needs_refresh(self, skew: float = 60.0, *, now: float | None = None) -> bool:
        """The one refresh decision (``TokenManager``, the MCP provider and the HTTP
        auth objects all ask it): whether the token expires within
        :meth:`refresh_margin` of ``skew``. Unknown expiry: never."""
        return self.is_expired(self.refresh_margin(skew), now=now)

    def expires_in(self, *, now: float | None = None) -> float | None:
        """Seconds until expiry (negative once expired), ``None`` if unknown."""
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def replace(self, **changes: Any) -> Tokens:
        """A copy with ``changes`` applied (as ``dataclasses.replace``: checked again)."""
        return replace(self, **changes)

    def __hash__(self) -> int:  # ``extra`` (a mapping) is left out; equal values hash alike
        return hash((self.access_token, self.refresh_token, self.expires_at, self.scope,
                     self.token_type))

    def __repr__(self) -> str:
        return (
            f"Tokens(access_token={fingerprint(self.access_token)}, "
            f"refresh_token={fingerprint(self.refresh_token)}, "
            f"expires_at={self.expires_at!r}, scope={self.scope!r}, "
            f"token_type={self.token_type!r}, extra_keys={sorted(self.extra)!r})"
        )

    __str__ = __repr__


# --------------------------------------------------------------------------- ClientInfo

# The optional fields of a client record (``clientId`` and ``identity`` are apart).
_CLIENT_RECORD: _Fields = (
    ("client_secret", "clientSecret", _opt_str),
    ("client_id_issued_at", "clientIdIssuedAt", _opt_number),
    ("client_secret_expires_at", "clientSecretExpiresAt", _opt_number),
    ("issuer", "issuer", _opt_str),
    ("token_endpoint", "tokenEndpoint", _opt_str),
    ("authorization_endpoint", "authorizationEndpoint", _opt_str),
    ("redirect_uri", "redirectUri", _opt_str),
    ("scope", "scope", _opt_str),
    ("token_endpoint_auth_method", "tokenEndpointAuthMethod", _opt_str),
)
_CLIENT_FIELDS = ("clientId", *_names(_CLIENT_RECORD), "identity")


# ClientInfo.extra fields of a client-credentials login (camelCase, as the record;
# written by OAuthClient.machine_client_info, read by OAuthClient.from_client_info).
#: ``"client_credentials"``: renew by asking again, not with a refresh token.
GRANT_TYPE_FIELD = "grantType"
#: The environment variable the client secret is read from (it is not stored).
SECRET_ENV_FIELD = "clientSecretEnv"
#: The PEM file of the ``private_key_jwt`` key, its algorithm and ``kid``.
KEY_FILE_FIELD = "privateKeyFile"
KEY_ALGORITHM_FIELD = "signingAlgorithm"
KEY_ID_FIELD = "keyId"


@valueclass(repr=False)
class ClientInfo:
    """A client registration, with enough to refresh a stored login later.

    ``client_id_issued_at`` and ``client_secret_expires_at`` are Unix seconds
    as in RFC 7591 (``0`` expiry means never). ``token_endpoint`` and
    ``issuer`` let a later process refresh without being told the server again.
    ``identity`` is the account the last login authenticated (``None``: unknown,
    or logged out); it is kept with the registration, so it outlives tokens
    the provider revoked.
    """

    client_id: str
    client_secret: str | None = None
    client_id_issued_at: float | None = None
    client_secret_expires_at: float | None = None
    issuer: str | None = None
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    redirect_uri: str | None = None
    scope: str | None = None
    token_endpoint_auth_method: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    identity: Identity | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ValueError("client_id must be a non-empty string")
        if self.identity is not None and not isinstance(self.identity, Identity):
            raise ValueError("identity must be an Identity")
        object.__setattr__(self, "extra", _freeze(self.extra))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClientInfo:
        """Parse a stored record. Raises ``ValueError`` naming the field."""
        client_id = _required_text(record, "client", "clientId")
        return cls(
            client_id=client_id,
            **_read_fields(record, _CLIENT_RECORD, _CLIENT_FIELDS),
            identity=None if record.get("identity") is None
            else Identity.from_record(record["identity"]),
        )

    def to_record(self) -> dict[str, Any]:
        """The stored record (camelCase, times in Unix seconds as RFC 7591 has them)."""
        record: dict[str, Any] = {"clientId": self.client_id}
        _write_fields(record, self, _CLIENT_RECORD)
        if self.identity is not None:
            record["identity"] = self.identity.to_record()
        return _with_extra(record, self.extra)

    @property
    def is_client_credentials(self) -> bool:
        """Whether this registration belongs to a client-credentials login
        (``extra["grantType"] == "client_credentials"``): renewed by asking again."""
        return self.extra.get(GRANT_TYPE_FIELD) == "client_credentials"

    def is_secret_expired(self, *, now: float | None = None) -> bool:
        """True when RFC 7591 ``client_secret_expires_at`` has passed (0 = never)."""
        if not self.client_secret_expires_at:
            return False
        return (time.time() if now is None else now) >= self.client_secret_expires_at

    def replace(self, **changes: Any) -> ClientInfo:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def __hash__(self) -> int:  # ``extra`` is left out; equal values hash alike
        return hash((self.client_id, self.client_secret, self.issuer, self.token_endpoint))

    def __repr__(self) -> str:
        return (
            f"ClientInfo(client_id={self.client_id!r}, "
            f"client_secret={fingerprint(self.client_secret)}, issuer={self.issuer!r}, "
            f"token_endpoint={self.token_endpoint!r}, identity={self.identity!r})"
        )

    __str__ = __repr__


# --------------------------------------------------------------------------- Identity

# The optional fields of an identity record (``sub`` is apart).
_IDENTITY_RECORD: _Fields = (
    ("issuer", "iss", _opt_str),
    ("email", "email", _opt_str),
    ("preferred_username", "preferredUsername", _opt_str),
    ("name", "name", _opt_str),
    ("source", "source", _opt_str),
)
_IDENTITY_FIELDS = ("sub", *_names(_IDENTITY_RECORD))


@valueclass(repr=False)
class Identity:
    """Who a login authenticated: the OpenID Connect ``sub`` and what names it.

    ``sub`` is unique per ``issuer`` (OIDC Core 2); ``email``,
    ``preferred_username`` and ``name`` are shown to people and are only
    kept when the provider sent them. ``source`` says where it came from:
    ``"id_token"`` (a validated ID Token) or ``"userinfo"``.
    """

    sub: str
    issuer: str | None = None
    email: str | None = None
    preferred_username: str | None = None
    name: str | None = None
    source: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.sub, str) or not self.sub:
            raise ValueError("sub must be a non-empty string")
        object.__setattr__(self, "extra", _freeze(self.extra))

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], *, source: str,
                    issuer: str | None = None) -> Identity:
        """From ID Token or userinfo claims; a claim that is not a string is left out.

        Raises ``ValueError`` when ``sub`` is missing or not a string.
        """
        def text(name: str) -> str | None:
            value = claims.get(name)
            return value if isinstance(value, str) and value else None

        sub = text("sub")
        if sub is None:
            raise ValueError(f"the {source} has no 'sub' string")
        return cls(sub=sub, issuer=text("iss") or issuer, email=text("email"),
                   preferred_username=text("preferred_username"), name=text("name"),
                   source=source)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Identity:
        """Parse a stored record. Raises ``ValueError`` naming the field."""
        if not isinstance(record, Mapping):
            raise ValueError("field 'identity' must be a JSON object")
        sub = _required_text(record, "identity", "sub")
        return cls(sub=sub, **_read_fields(record, _IDENTITY_RECORD, _IDENTITY_FIELDS))

    def to_record(self) -> dict[str, Any]:
        """The stored record (camelCase)."""
        record: dict[str, Any] = {"sub": self.sub}
        _write_fields(record, self, _IDENTITY_RECORD)
        return _with_extra(record, self.extra)

    @property
    def label(self) -> str:
        """What to show a person: the email, else the username, else the name, else ``sub``."""
        return self.email or self.preferred_username or self.name or self.sub

    def same_account(self, other: Identity) -> bool:
        """Whether both name one account: the same ``sub`` from the same issuer
        (an unknown issuer on either side compares by ``sub`` alone)."""
        if self.sub != other.sub:
            return False
        return self.issuer is None or other.issuer is None or (
            self.issuer.removesuffix("/") == other.issuer.removesuffix("/"))

    def replace(self, **changes: Any) -> Identity:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def __hash__(self) -> int:  # ``extra`` is left out; equal values hash alike
        return hash((self.sub, self.issuer))

    def __repr__(self) -> str:
        return f"Identity(sub={self.sub!r}, issuer={self.issuer!r}, label={self.label!r})"

    __str__ = __repr__


# --------------------------------------------------------------------------- OAuthSession

_SESSION_RECORD: _Fields = (
    ("code_verifier", "codeVerifier", _opt_str),
    ("state", "state", _opt_str),
    ("created_at", "createdAt", _opt_number),
)
_SESSION_FIELDS = _names(_SESSION_RECORD)


@valueclass(repr=False)
class OAuthSession:
    """An authorization in progress: the PKCE verifier and ``state`` sent."""

    code_verifier: str | None = None
    state: str | None = None
    created_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", _freeze(self.extra))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OAuthSession:
        """Parse a stored record. Raises ``ValueError`` naming the field."""
        if not isinstance(record, Mapping):
            raise ValueError("session record must be a JSON object")
        return cls(**_read_fields(record, _SESSION_RECORD, _SESSION_FIELDS))

    def to_record(self) -> dict[str, Any]:
        """The stored record (npm shape)."""
        record: dict[str, Any] = {}
        _write_fields(record, self, _SESSION_RECORD)
        return _with_extra(record, self.extra)

    def __hash__(self) -> int:  # ``extra`` is left out; equal values hash alike
        return hash((self.code_verifier, self.state, self.created_at))

    def __repr__(self) -> str:
        return (
            f"OAuthSession(code_verifier={fingerprint(self.code_verifier)}, "
            f"state={fingerprint(self.state)}, created_at={self.created_at!r})"
        )

    __str__ = __repr__
