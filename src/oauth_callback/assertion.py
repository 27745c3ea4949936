"""``private_key_jwt`` client authentication (RFC 7523 2.2, 3): signed JWT assertions.

A :class:`PrivateKeyJWT` holds a private key (from a PEM string or a PEM file)
and signs, for each token request, a fresh assertion with ``joserfc`` (a
maintained JOSE library; extra ``[jwt]``)::

    signer = PrivateKeyJWT.from_pem_file("client.key", algorithm="ES256", kid="k1")
    assertion = signer.assertion(client_id="my-client", audience=token_endpoint)

Each assertion carries ``iss`` = ``sub`` = the client id, ``aud`` = the token
endpoint (what RFC 7523 3 and most servers expect; pass the issuer instead if
the server asks for it), ``iat``, a short ``exp`` (60 s by default, at most
300 s), a unique random ``jti`` (servers refuse a replay), and ``kid`` in the
header when given. ES256, ES384, RS256 and PS256 are supported; the key must
match the algorithm (EC P-256 for ES256, P-384 for ES384, RSA of 2048 bits or
more for RS256/PS256), else :class:`ValueError`.

Neither the key nor an assertion appears in a ``repr``, an exception message
or a log line: a :class:`PrivateKeyJWT` shows its algorithm, ``kid`` and the
RFC 7638 thumbprint of the public key.
"""

from __future__ import annotations

import os
import secrets
import time
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, RSAKey

__all__ = ["ALGORITHMS", "MAX_LIFETIME", "PrivateKeyJWT"]

#: The signing algorithms supported, with the key type and EC curve each needs.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}
#: The longest ``exp`` - ``iat`` an assertion may have (RFC 7523 3 asks for a short one).
MAX_LIFETIME = 300.0
_MIN_RSA_BITS = 2048


def _joserfc() -> Any:
    try:
        import joserfc.jwk
        import joserfc.jwt
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("joserfc"):
            raise
        raise ModuleNotFoundError(
            "private_key_jwt needs joserfc: pip install 'oauth-callback[jwt]'", name="joserfc"
        ) from None
    return joserfc


class PrivateKeyJWT:
    """Signs ``private_key_jwt`` client assertions with one private key.

    ``pem`` is the PEM text of the private key (PKCS#8 or the traditional EC /
    RSA forms, unencrypted). Raises :class:`ValueError` (naming neither the key
    nor its content) for an unknown algorithm, a key that does not parse, a
    public key, or a key that does not fit the algorithm.
    """

    def __init__(
        self,
        pem: str | bytes,
        *,
        algorithm: str = "ES256",
        kid: str | None = None,
        lifetime: float = 60.0,
        source: str | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"unsupported signing algorithm {algorithm!r}; use one of {sorted(ALGORITHMS)}"
            )
        if not 1 <= lifetime <= MAX_LIFETIME:
            raise ValueError(f"assertion lifetime must be 1 to {MAX_LIFETIME:g} seconds")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise ValueError("kid must be a non-empty string")
        where = f" in {source}" if source else ""
        self.algorithm = algorithm
        self.kid = kid
        self.lifetime = float(lifetime)
        self.source = source
        self._key = self._load(pem, algorithm, where)

    @classmethod
    def from_pem_file(
        cls,
        path: str | os.PathLike[str],
        *,
        algorithm: str = "ES256",
        kid: str | None = None,
        lifetime: float = 60.0,
    ) -> PrivateKeyJWT:
        """Read the key from a PEM file. Raises :class:`OSError` naming the file
        when it cannot be read, :class:`ValueError` as the constructor."""
        name = os.fspath(path)
        with open(name, "rb") as f:
            pem = f.read()
        return cls(pem, algorithm=algorithm, kid=kid, lifetime=lifetime, source=name)

    @staticmethod
    def _load(pem: str | bytes, algorithm: str, where: str) -> ECKey | RSAKey:
        jose = _joserfc()
        key_type, curve = ALGORITHMS[algorithm]
        text = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
        if b"PRIVATE KEY-----" not in text:
            raise ValueError(f"no PEM private key{where} (expected '-----BEGIN ... PRIVATE KEY')")
        key_cls = jose.jwk.ECKey if key_type == "EC" else jose.jwk.RSAKey
        try:
            with warnings.catch_warnings():  # a weak key gets our own error below
                warnings.simplefilter("ignore", jose.jwk.SecurityWarning)
                key = key_cls.import_key(text)
        except Exception:  # joserfc/cryptography raise several types; the text must not leak
            raise ValueError(
                f"the private key{where} is not a valid unencrypted {key_type} key "
                f"(needed for {algorithm})"
            ) from None
        if not key.is_private:
            raise ValueError(f"the key{where} is a public key; a private key is needed")
        if key_type == "EC" and key.curve_name != curve:
            raise ValueError(
                f"the EC key{where} is on curve {key.curve_name}; {algorithm} needs {curve}"
            )
        if key_type == "RSA" and key.raw_value.key_size < _MIN_RSA_BITS:
            raise ValueError(
                f"the RSA key{where} has {key.raw_value.key_size} bits; "
                f"{algorithm} needs {_MIN_RSA_BITS} or more"
            )
        return key  # type: ignore[no-any-return]

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint of the public key (safe to show)."""
        return str(self._key.thumbprint())

    def public_key_pem(self) -> str:
        """The public key as PEM (what to register with the authorization server)."""
        return str(self._key.as_pem(private=False).decode("ascii"))

    def assertion(self, *, client_id: str, audience: str, now: float | None = None) -> str:
        """A new signed assertion (compact JWS) for one token request."""
        jose = _joserfc()
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": issued,
            "exp": issued + int(self.lifetime),
            "jti": secrets.token_urlsafe(24),
        }
        header: dict[str, Any] = {"alg": self.algorithm, "typ": "JWT"}
        if self.kid is not None:
            header["kid"] = self.kid
        return str(jose.jwt.encode(header, claims, self._key, algorithms=[self.algorithm]))

    def __repr__(self) -> str:
        return (
            f"PrivateKeyJWT(algorithm={self.algorithm!r}, kid={self.kid!r}, "
            f"thumbprint={self.thumbprint!r})"
        )

    __str__ = __repr__
