"""ID Token checks no other test pinned: critical headers, keys published for another
use or algorithm, and an ``aud`` claim that is missing or not a string list.

Each test fails when the check it names is deleted from oauth_callback.oidc. The keys
are real RSA keys; the tokens are real JWS signed with them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jwk import KeySet, RSAKey

from oauth_callback import IdTokenError
from oauth_callback.errors import DiscoveryError
from oauth_callback.oidc import parse_jwks, validate_id_token

ISSUER = "https://issuer.example"
CLIENT = "client-1"


def _claims(**more: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "sub": "alice", "aud": CLIENT, "iat": now,
                              "exp": now + 300, "nonce": "n"}
    for name, value in more.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _key(**parameters: Any) -> RSAKey:
    return RSAKey.generate_key(2048, parameters=parameters or None, auto_kid=True)


def _token(key: RSAKey, claims: dict[str, Any], alg: str = "RS256",
           **header: Any) -> str:
    """A JWS signed with ``key``'s private half whatever ``use``/``alg`` it is published
    for, and with any header (joserfc refuses to sign either: an attacker need not)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    hashes_ = {"RS256": hashes.SHA256(), "RS512": hashes.SHA512()}
    signing_input = (b64(json.dumps({"alg": alg, "kid": key.kid, **header}).encode()) + "."
                     + b64(json.dumps(claims).encode()))
    signature = key.private_key.sign(signing_input.encode(), padding.PKCS1v15(),
                                     hashes_[alg])
    return f"{signing_input}.{b64(signature)}"


def _validate(token: str, keys: KeySet) -> object:
    return validate_id_token(token, keys, issuer=ISSUER, client_id=CLIENT, nonce="n")


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return _key(use="sig")


def test_the_good_token_of_these_tests_validates(key: RSAKey) -> None:
    identity = _validate(_token(key, _claims()), KeySet([key]))
    assert getattr(identity, "sub") == "alice"


def test_a_critical_header_parameter_is_refused(key: RSAKey) -> None:
    token = _token(key, _claims(), crit=["exp-ext"], **{"exp-ext": 1})
    with pytest.raises(IdTokenError, match=r"critical header parameters") as info:
        _validate(token, KeySet([key]))
    assert info.value.claim == "header"


def test_a_key_published_for_encryption_never_verifies_an_id_token() -> None:
    enc = _key(use="enc")
    token = _token(enc, _claims())
    with pytest.raises(IdTokenError) as info:
        _validate(token, KeySet([enc]))  # a key set built by hand, not by parse_jwks
    assert info.value.claim == "signature"
    body = json.dumps({"keys": [enc.as_dict(private=False)]}).encode()
    with pytest.raises(DiscoveryError, match=r"no usable signing key"):
        parse_jwks(body, "https://issuer.example/jwks")


def test_a_key_published_for_another_algorithm_never_verifies_an_id_token() -> None:
    rs512 = _key(use="sig", alg="RS512")
    token = _token(rs512, _claims(), alg="RS256")  # same RSA key, algorithm not its own
    with pytest.raises(IdTokenError) as info:
        _validate(token, KeySet([rs512]))
    assert info.value.claim == "signature"
    # The algorithm the key is published for is accepted.
    assert getattr(_validate(_token(rs512, _claims(), alg="RS512"), KeySet([rs512])),
                   "sub") == "alice"


@pytest.mark.parametrize("aud", [None, 123, ["ok", 5], {"client-1": True}])
def test_a_missing_or_malformed_audience_is_a_typed_error(key: RSAKey, aud: Any) -> None:
    claims = _claims(aud=aud) if aud is not None else _claims(aud=None)
    with pytest.raises(IdTokenError, match=r"no 'aud' claim") as info:
        _validate(_token(key, claims), KeySet([key]))
    assert info.value.claim == "aud"
