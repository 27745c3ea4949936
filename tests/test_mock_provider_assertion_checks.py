"""MockProvider's private_key_jwt checks no other test pinned (RFC 7523 3, RFC 6749 2.3):
``sub`` must be the client, the form's ``client_id`` must match the assertion's ``iss``,
the assertion type must be the JWT bearer one, and no second authentication method may
ride along. The tests of our client rely on the mock refusing these, so each is pinned
here with a real HTTP request to a real MockProvider."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx2
import pytest

from oauth_callback.testing import MockProvider

jose_jwk = pytest.importorskip("joserfc.jwk", reason="joserfc is a test dependency (CI installs it)")
jose_jwt = pytest.importorskip("joserfc.jwt")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


def _assertion(key: object, provider: MockProvider, iss: str, sub: str) -> str:
    now = int(time.time())
    return jose_jwt.encode({"alg": "ES256"}, {"iss": iss, "sub": sub,
                                              "aud": provider.token_endpoint, "exp": now + 30,
                                              "jti": uuid.uuid4().hex}, key)


def _post(provider: MockProvider, form: dict[str, str],
          headers: dict[str, str] | None = None) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:
        return http.post(provider.token_endpoint, data={"grant_type": "client_credentials",
                                                        **form}, headers=headers or {})


def test_the_mock_refuses_assertions_that_break_rfc_7523(provider: MockProvider) -> None:
    key = jose_jwk.ECKey.generate_key("P-256")
    client_id, _ = provider.register_machine_client(
        public_key=key.as_pem(private=False).decode())
    other_id, _ = provider.register_machine_client(
        public_key=jose_jwk.ECKey.generate_key("P-256").as_pem(private=False).decode())

    def form(assertion: str, **more: str) -> dict[str, str]:
        return {"client_assertion_type": JWT_BEARER, "client_assertion": assertion, **more}

    # sub is not the client (RFC 7523 3, item 2).
    r = _post(provider, form(_assertion(key, provider, client_id, "someone-else")))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # The form names another client than the assertion's issuer.
    r = _post(provider, form(_assertion(key, provider, client_id, client_id),
                             client_id=other_id))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert provider.assertion_failures == ["sub", "client_id"]
    # Another assertion type.
    r = _post(provider, {"client_assertion_type": "urn:example:saml",
                         "client_assertion": _assertion(key, provider, client_id, client_id)})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # A second authentication method beside the assertion (RFC 6749 2.3).
    r = _post(provider, form(_assertion(key, provider, client_id, client_id),
                             client_secret="also-a-secret"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert provider.client_credentials_count == 0
    # The same assertion shape, right: accepted.
    r = _post(provider, form(_assertion(key, provider, client_id, client_id),
                             client_id=client_id))
    assert r.status_code == 200 and r.json()["access_token"]
    assert provider.client_credentials_count == 1
