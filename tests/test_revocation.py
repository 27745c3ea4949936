"""RFC 7009 token revocation: the pure request/response layer and MockProvider's /revoke."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx2
import pytest

from oauth_callback.errors import OAuthError, TokenEndpointError
from oauth_callback.protocol import (
    is_retryable,
    parse_revocation_response,
    revocation_request,
)
from oauth_callback.testing import MockProvider

from .test_mock_provider import exchange, get_code


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


def test_public_client_request() -> None:
    req = revocation_request("https://as/revoke", token="rt-secret", token_type_hint="refresh_token",
                             client_id="cid")
    assert req.url == "https://as/revoke"
    assert parse_qs(req.body.decode()) == {
        "token": ["rt-secret"], "token_type_hint": ["refresh_token"], "client_id": ["cid"]}
    assert "Authorization" not in req.headers
    assert "rt-secret" in req.secrets() and "rt-secret" not in repr(req)


def test_confidential_client_authenticates_as_at_the_token_endpoint() -> None:
    req = revocation_request("https://as/revoke", token="at", client_id="c i",
                             client_secret="s:é")
    scheme, _, cred = req.headers["Authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(cred).decode() == "c+i:s%3A%C3%A9"
    assert parse_qs(req.body.decode()) == {"token": ["at"]}
    post = revocation_request("https://as/revoke", token="at", client_id="c",
                              client_secret="s", auth_method="client_secret_post")
    assert parse_qs(post.body.decode()) == {"token": ["at"], "client_id": ["c"],
                                            "client_secret": ["s"]}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="token_type_hint must be one of"):
        revocation_request("https://as/revoke", token="t", token_type_hint="id_token",
                           client_id="c")
    with pytest.raises(ValueError, match="token must be a non-empty string"):
        revocation_request("https://as/revoke", token="", client_id="c")
    with pytest.raises(ValueError, match="needs a client_secret"):
        revocation_request("https://as/revoke", token="t", client_id="c",
                           auth_method="client_secret_basic")


def test_responses() -> None:
    parse_revocation_response(200, {}, b"")
    with pytest.raises(OAuthError) as err:
        parse_revocation_response(
            400, {}, b'{"error":"unsupported_token_type","error_description":"no rt-secret"}',
            secrets=["rt-secret"])
    assert err.value.error == "unsupported_token_type"
    assert str(err.value) == "unsupported_token_type: no <redacted>"
    with pytest.raises(TokenEndpointError) as down:
        parse_revocation_response(503, {"retry-after": "7"}, b'{"error":"temporarily_unavailable"}')
    assert str(down.value) == "revocation endpoint answered HTTP 503 (temporarily_unavailable)"
    assert down.value.retry_after == 7 and is_retryable(down.value)
    with pytest.raises(TokenEndpointError, match=r"^revocation endpoint answered HTTP 404$"):
        parse_revocation_response(404, {}, b"<html>")


def _revoke(provider: MockProvider, token: str, hint: str | None = None,
            client_id: str = "test-client") -> httpx2.Response:
    req = revocation_request(provider.revocation_endpoint, token=token, token_type_hint=hint,
                             client_id=client_id)
    return httpx2.post(req.url, content=req.body, headers=dict(req.headers))


def _tokens(provider: MockProvider) -> dict[str, str]:
    with httpx2.Client() as http:
        code, verifier = get_code(provider, http)
        response = exchange(provider, http, code, verifier)
        assert response.status_code == 200
        return response.json()


def test_revoking_a_refresh_token_ends_the_grant(provider: MockProvider) -> None:
    tokens = _tokens(provider)
    assert provider.metadata()["revocation_endpoint"] == provider.revocation_endpoint
    response = _revoke(provider, tokens["refresh_token"], "refresh_token")
    assert response.status_code == 200
    assert provider.revocations == 1 and provider.revocation_requests == 1
    assert not provider.is_refresh_token_active(tokens["refresh_token"])
    assert not provider.is_access_token_active(tokens["access_token"])
    refresh = httpx2.post(provider.token_endpoint, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": "test-client"})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


def test_revoking_an_access_token_only(provider: MockProvider) -> None:
    tokens = _tokens(provider)
    assert _revoke(provider, tokens["access_token"]).status_code == 200
    assert not provider.is_access_token_active(tokens["access_token"])
    assert provider.is_refresh_token_active(tokens["refresh_token"])


def test_unknown_and_foreign_tokens_answer_200_and_revoke_nothing(provider: MockProvider) -> None:
    tokens = _tokens(provider)
    other, _ = provider.register_client()
    assert _revoke(provider, "rt_unknown").status_code == 200
    assert _revoke(provider, tokens["refresh_token"], client_id=other).status_code == 200
    assert provider.revocations == 0 and provider.is_refresh_token_active(tokens["refresh_token"])


def test_revocation_needs_client_authentication(provider: MockProvider) -> None:
    response = httpx2.post(provider.revocation_endpoint, data={"token": "x"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    with pytest.raises(OAuthError, match="invalid_client"):
        parse_revocation_response(response.status_code, {}, response.content)


def test_injected_revocation_failures(provider: MockProvider) -> None:
    provider.fail_next_revocations(1)
    first = _revoke(provider, "x")
    assert first.status_code == 503
    with pytest.raises(TokenEndpointError):
        parse_revocation_response(first.status_code, dict(first.headers), first.content)
    assert _revoke(provider, "x").status_code == 200
    assert provider.revocation_requests == 2
