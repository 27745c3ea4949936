"""MockProvider's dynamic registration (RFC 7591), client configuration endpoint
(RFC 7592 read) and ``forget_client``, over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from oauth_callback.testing import MockProvider

from .test_mock_provider import authorize_url, exchange, make_pkce

REDIRECT = "http://127.0.0.1:8765/callback"


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(follow_redirects=False, timeout=5) as client:
        yield client


def register(p: MockProvider, http: httpx2.Client, **metadata: Any) -> dict[str, Any]:
    body = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **metadata}
    response = http.post(p.registration_endpoint, json=body)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def read(http: httpx2.Client, document: dict[str, Any], token: str | None = None) -> httpx2.Response:
    token = document["registration_access_token"] if token is None else token
    return http.get(document["registration_client_uri"],
                    headers={"Authorization": f"Bearer {token}"})


def authorize(p: MockProvider, http: httpx2.Client, client_id: str) -> httpx2.Response:
    _, challenge = make_pkce()
    return http.get(authorize_url(p, client_id=client_id, code_challenge=challenge,
                                  code_challenge_method="S256"))


def location_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    parts = urlsplit(response.headers["location"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_registration_names_the_configuration_endpoint_and_it_answers(
    http: httpx2.Client,
) -> None:
    with MockProvider() as p:
        document = register(p, http, token_endpoint_auth_method="client_secret_basic")
        client_id = document["client_id"]
        assert document["registration_client_uri"] == f"{p.registration_endpoint}/{client_id}"
        assert document["registration_access_token"].startswith("rat_")
        answer = read(http, document)
        assert answer.status_code == 200
        assert answer.json() == document  # RFC 7592 3: the same registration, secret included
        for headers in ({}, {"Authorization": "Bearer rat_wrong"},
                        {"Authorization": "Basic " + document["registration_access_token"]}):
            refused = http.get(document["registration_client_uri"], headers=headers)
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
            assert document["registration_access_token"] not in refused.text
        assert http.post(document["registration_client_uri"]).status_code == 405
        assert p.client_configuration_requests == 4 and p.registrations == 1


def test_without_client_configuration_there_is_no_endpoint(http: httpx2.Client) -> None:
    with MockProvider(client_configuration=False) as p:
        document = register(p, http)
        assert "registration_client_uri" not in document
        assert "registration_access_token" not in document
        answer = http.get(f"{p.registration_endpoint}/{document['client_id']}")
        assert answer.status_code == 404
        assert p.client_configuration_requests == 0


def test_rotate_on_configuration_read_issues_new_credentials(http: httpx2.Client) -> None:
    with MockProvider() as p:
        document = register(p, http, token_endpoint_auth_method="client_secret_post")
        p.rotate_on_configuration_read = True
        answer = read(http, document)
        assert answer.status_code == 200
        rotated = answer.json()
        assert rotated["registration_access_token"] != document["registration_access_token"]
        assert rotated["client_secret"] != document["client_secret"]
        assert read(http, document).status_code == 401  # the old token is gone
        assert read(http, rotated).status_code == 200


def test_a_forgotten_client_is_unknown_everywhere(http: httpx2.Client) -> None:
    with MockProvider() as p:
        document = register(p, http)
        client_id = document["client_id"]
        code_response = authorize(p, http, client_id)
        code = location_params(code_response)["code"]
        p.forget_client(client_id)
        assert read(http, document).status_code == 401  # RFC 7592 2.1
        page = authorize(p, http, client_id)
        assert page.status_code == 400 and "text/html" in page.headers["content-type"]
        token = exchange(p, http, code, None, client_id=client_id)
        assert token.status_code == 401 and token.json()["error"] == "invalid_client"
        with pytest.raises(KeyError):
            p.forget_client(client_id)
        with pytest.raises(ValueError, match="authorize"):
            p.forget_client(p.client_id, authorize="maybe")


def test_a_forgotten_client_may_get_an_error_redirect_or_a_code(http: httpx2.Client) -> None:
    with MockProvider() as p:
        redirected = register(p, http)["client_id"]
        approved = register(p, http)["client_id"]
        p.forget_client(redirected, authorize="redirect")
        p.forget_client(approved, authorize="approve")
        params = location_params(authorize(p, http, redirected))
        assert params["error"] == "unauthorized_client" and params["state"] == "st-123"
        assert "code" not in params
        before = p.codes_issued
        code = location_params(authorize(p, http, approved))["code"]
        assert p.codes_issued == before + 1
        token = exchange(p, http, code, None, client_id=approved)
        assert token.status_code == 401 and token.json()["error"] == "invalid_client"
        # An unregistered redirect URI still gets the error page, never a redirect.
        _, challenge = make_pkce()
        elsewhere = http.get(authorize_url(p, client_id=redirected, code_challenge=challenge,
                                           code_challenge_method="S256",
                                           redirect_uri="http://127.0.0.1:9/other"))
        assert elsewhere.status_code == 400
