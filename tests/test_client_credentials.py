"""The client-credentials grant (RFC 6749 4.4) with client_secret_basic, client_secret_post
and private_key_jwt (RFC 7523), the token endpoint auth-method choice, and the
MockProvider's verification of each, over real HTTP on loopback."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx2
import pytest

from oauth_callback.errors import InvalidClientError, OAuthError
from oauth_callback.protocol import (
    JWT_BEARER_ASSERTION,
    ServerMetadata,
    TokenRequest,
    choose_auth_method,
    client_credentials_request,
    parse_token_response,
)
from oauth_callback.testing import MockProvider

jose_jwk = pytest.importorskip("joserfc.jwk", reason="joserfc is a test dependency (CI installs it)")
jose_jwt = pytest.importorskip("joserfc.jwt")

from oauth_callback.assertion import PrivateKeyJWT  # noqa: E402


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


def send(request: TokenRequest) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:
        return http.post(request.url, content=request.body, headers=dict(request.headers))


def exchange(request: TokenRequest):  # -> Tokens, or raises the typed error
    response = send(request)
    return parse_token_response(
        response.status_code, dict(response.headers), response.content, secrets=request.secrets()
    )


def ec_key(curve: str = "P-256") -> tuple[str, str]:
    key = jose_jwk.ECKey.generate_key(curve)
    return key.as_pem(private=True).decode(), key.as_pem(private=False).decode()


def rsa_key() -> tuple[str, str]:
    key = jose_jwk.RSAKey.generate_key(2048)
    return key.as_pem(private=True).decode(), key.as_pem(private=False).decode()


# --------------------------------------------------------------------------- the auth-method choice


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "none"),
        ({"client_secret": "s"}, "client_secret_basic"),
        ({"client_secret": "s", "supported": ["client_secret_basic", "client_secret_post"]},
         "client_secret_basic"),
        ({"client_secret": "s", "supported": ["client_secret_post"]}, "client_secret_post"),
        ({"client_secret": "s", "supported": ["private_key_jwt"]}, "client_secret_basic"),
        ({"client_secret": "s", "supported": []}, "client_secret_basic"),
        ({"client_secret": "s", "explicit": "client_secret_post"}, "client_secret_post"),
        ({"client_secret": "s", "supported": ["client_secret_post"],
          "explicit": "client_secret_basic"}, "client_secret_basic"),
        ({"private_key": True}, "private_key_jwt"),
        ({"private_key": True, "client_secret": "s"}, "private_key_jwt"),
    ],
)
def test_auth_method_choice(kwargs: dict, expected: str) -> None:
    assert choose_auth_method(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"explicit": "client_secret_jwt", "client_secret": "s"},
        {"explicit": "client_secret_basic"},
        {"explicit": "private_key_jwt", "client_secret": "s"},
    ],
)
def test_auth_method_choice_refuses_what_cannot_work(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="token_endpoint_auth_method"):
        choose_auth_method(**kwargs)


def test_metadata_drives_the_choice(provider: MockProvider) -> None:
    for methods, expected in [(["client_secret_basic"], "client_secret_basic"),
                              (["client_secret_post"], "client_secret_post"),
                              (None, "client_secret_basic")]:
        with MockProvider(auth_methods=methods) as p:
            meta = ServerMetadata.from_json(p.metadata(), issuer=p.issuer)
            supported = meta.token_endpoint_auth_methods_supported
            assert choose_auth_method(client_secret="s", supported=supported) == expected


# --------------------------------------------------------------------------- requests, pure


def test_client_credentials_request_shapes() -> None:
    secret = "s3cr:t/+&="
    basic = client_credentials_request("https://as/token", client_id="c i", client_secret=secret,
                                       scope=["read", "write"], resource="https://api")
    assert dict(basic.form) == {"grant_type": "client_credentials", "scope": "read write",
                                "resource": "https://api"}
    pair = base64.b64decode(basic.headers["Authorization"].split()[1]).decode()
    assert pair == f"{quote_plus('c i', safe='')}:{quote_plus(secret, safe='')}"
    post = client_credentials_request("https://as/token", client_id="c", client_secret=secret,
                                      auth_method="client_secret_post")
    assert post.form["client_secret"] == secret and "Authorization" not in post.headers
    jwt = client_credentials_request("https://as/token", client_id="c", client_assertion="a.b.c")
    assert dict(jwt.form) == {"grant_type": "client_credentials", "client_id": "c",
                              "client_assertion_type": JWT_BEARER_ASSERTION,
                              "client_assertion": "a.b.c"}
    for request in (basic, post, jwt):
        assert secret not in repr(request) and "a.b.c" not in repr(request)
    with pytest.raises(ValueError, match="authenticated client"):
        client_credentials_request("https://as/token", client_id="c")
    with pytest.raises(ValueError, match="client assertion"):
        client_credentials_request("https://as/token", client_id="c",
                                   auth_method="private_key_jwt")


# --------------------------------------------------------------------------- against the provider


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_with_a_secret(provider: MockProvider, method: str) -> None:
    client_id, secret = provider.register_machine_client(scope="read write")
    assert secret is not None
    tokens = exchange(client_credentials_request(
        provider.token_endpoint, client_id=client_id, client_secret=secret, auth_method=method,
        scope="read"))
    assert tokens.refresh_token is None and tokens.scope == "read"
    assert provider.access_token_info(tokens.access_token)["client_id"] == client_id
    assert provider.client_credentials_count == 1
    sent = provider.token_requests[-1]
    assert ("client_secret" in sent) is (method == "client_secret_post")


@pytest.mark.parametrize(("algorithm", "keys"), [("ES256", ec_key), ("RS256", rsa_key)])
def test_client_credentials_with_private_key_jwt(
    provider: MockProvider, algorithm: str, keys, tmp_path: Path
) -> None:
    private_pem, public_pem = keys()
    client_id, secret = provider.register_machine_client(public_key=public_pem)
    assert secret is None
    key_file = tmp_path / "client.key"
    key_file.write_text(private_pem)
    signer = PrivateKeyJWT.from_pem_file(key_file, algorithm=algorithm, kid="key-1")
    assertion = signer.assertion(client_id=client_id, audience=provider.token_endpoint)
    header = jose_jwt.decode(assertion, jose_jwk.import_key(public_pem,
                                                            "EC" if algorithm == "ES256" else "RSA"))
    assert header.header == {"alg": algorithm, "typ": "JWT", "kid": "key-1"}
    claims = header.claims
    assert claims["iss"] == claims["sub"] == client_id and claims["aud"] == provider.token_endpoint
    assert 0 < claims["exp"] - claims["iat"] <= 60 and claims["jti"]
    tokens = exchange(client_credentials_request(
        provider.token_endpoint, client_id=client_id, client_assertion=assertion))
    assert tokens.refresh_token is None and tokens.scope == "read write"
    # Two assertions are never alike (unique jti), and the provider accepts each once.
    again = signer.assertion(client_id=client_id, audience=provider.token_endpoint)
    assert again != assertion
    exchange(client_credentials_request(provider.token_endpoint, client_id=client_id,
                                        client_assertion=again))
    assert provider.client_credentials_count == 2 and provider.assertion_failures == []
    text = repr(signer)
    assert "PRIVATE" not in text and private_pem.splitlines()[1][:20] not in text


def _rejected(provider: MockProvider, client_id: str, assertion: str) -> InvalidClientError:
    with pytest.raises(InvalidClientError) as info:
        exchange(client_credentials_request(provider.token_endpoint, client_id=client_id,
                                            client_assertion=assertion))
    assert assertion not in str(info.value) and assertion not in repr(info.value)
    return info.value


def test_the_provider_verifies_every_part_of_the_assertion(provider: MockProvider) -> None:
    private_pem, public_pem = ec_key()
    client_id, _ = provider.register_machine_client(public_key=public_pem)
    signer = PrivateKeyJWT(private_pem)
    other = PrivateKeyJWT(ec_key()[0])
    aud = provider.token_endpoint

    _rejected(provider, client_id, other.assertion(client_id=client_id, audience=aud))
    _rejected(provider, client_id, signer.assertion(client_id=client_id, audience="http://evil"))
    _rejected(provider, client_id, signer.assertion(client_id=client_id, audience=aud,
                                                    now=time.time() - 120))
    key = jose_jwk.ECKey.import_key(private_pem)
    now = int(time.time())
    too_long = jose_jwt.encode({"alg": "ES256"}, {"iss": client_id, "sub": client_id, "aud": aud,
                                                  "exp": now + 3600, "jti": "j1"}, key)
    _rejected(provider, client_id, too_long)
    no_jti = jose_jwt.encode({"alg": "ES256"}, {"iss": client_id, "sub": client_id, "aud": aud,
                                                "exp": now + 30}, key)
    _rejected(provider, client_id, no_jti)
    good = signer.assertion(client_id=client_id, audience=aud)
    exchange(client_credentials_request(aud, client_id=client_id, client_assertion=good))
    _rejected(provider, client_id, good)  # replayed: same jti
    assert provider.assertion_failures == ["signature", "aud", "exp", "exp", "jti", "jti"]
    assert provider.client_credentials_count == 1
    # The issuer is an accepted audience too.
    exchange(client_credentials_request(aud, client_id=client_id, client_assertion=signer.assertion(
        client_id=client_id, audience=provider.issuer)))


def test_basic_only_provider_refuses_post_and_jwt(provider: MockProvider) -> None:
    with MockProvider(auth_methods=["client_secret_basic"]) as p:
        client_id, secret = p.register_machine_client()
        assert secret is not None
        post = client_credentials_request(p.token_endpoint, client_id=client_id,
                                          client_secret=secret, auth_method="client_secret_post")
        with pytest.raises(InvalidClientError) as info:
            exchange(post)
        assert info.value.error == "invalid_client"
        basic = client_credentials_request(p.token_endpoint, client_id=client_id,
                                           client_secret=secret)
        assert exchange(basic).access_token
        private_pem, public_pem = ec_key()
        jwt_client, _ = p.register_machine_client(public_key=public_pem)
        assertion = PrivateKeyJWT(private_pem).assertion(client_id=jwt_client,
                                                         audience=p.token_endpoint)
        with pytest.raises(InvalidClientError):
            exchange(client_credentials_request(p.token_endpoint, client_id=jwt_client,
                                                client_assertion=assertion))


def test_a_wrong_secret_is_invalid_client_and_never_echoed(provider: MockProvider) -> None:
    client_id, _ = provider.register_machine_client()
    wrong = "wrong/secret+with=chars"
    for method in ("client_secret_basic", "client_secret_post"):
        request = client_credentials_request(provider.token_endpoint, client_id=client_id,
                                             client_secret=wrong, auth_method=method)
        with pytest.raises(InvalidClientError) as info:
            exchange(request)
        text = str(info.value) + repr(info.value)
        for form in (wrong, quote(wrong, safe=""), quote_plus(wrong, safe=""),
                     base64.b64encode(f"{client_id}:{wrong}".encode()).decode()):
            assert form not in text
        assert isinstance(info.value, OAuthError)


def test_public_and_unregistered_clients_may_not_use_the_grant(provider: MockProvider) -> None:
    client_id, secret = provider.register_client(confidential=True)
    assert secret is not None
    with pytest.raises(OAuthError) as info:
        exchange(client_credentials_request(provider.token_endpoint, client_id=client_id,
                                            client_secret=secret))
    assert info.value.error == "unauthorized_client"
    machine, machine_secret = provider.register_machine_client(scope="read")
    with pytest.raises(OAuthError) as info:
        exchange(client_credentials_request(provider.token_endpoint, client_id=machine,
                                            client_secret=machine_secret, scope="write"))
    assert info.value.error == "invalid_scope"


# --------------------------------------------------------------------------- keys


def test_private_key_loading_errors(tmp_path: Path) -> None:
    private_pem, public_pem = ec_key()
    with pytest.raises(ValueError, match="no PEM private key"):
        PrivateKeyJWT(public_pem)
    with pytest.raises(ValueError, match="not a valid unencrypted RSA key"):
        PrivateKeyJWT(private_pem, algorithm="RS256")
    with pytest.raises(ValueError, match="curve P-384; ES256 needs P-256"):
        PrivateKeyJWT(ec_key("P-384")[0])
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError, match="1024 bits; RS256 needs 2048"):
        PrivateKeyJWT(small, algorithm="RS256")
    with pytest.raises(ValueError, match="unsupported signing algorithm"):
        PrivateKeyJWT(private_pem, algorithm="HS256")
    with pytest.raises(ValueError, match="lifetime"):
        PrivateKeyJWT(private_pem, lifetime=3600)
    mangled = private_pem.replace(private_pem.splitlines()[1], "A" * 64)
    with pytest.raises(ValueError) as info:
        PrivateKeyJWT(mangled, source="k.pem")
    assert "AAAA" not in str(info.value) and "k.pem" in str(info.value)
    with pytest.raises(FileNotFoundError):
        PrivateKeyJWT.from_pem_file(tmp_path / "missing.pem")
    assert PrivateKeyJWT(private_pem).public_key_pem() == public_pem
