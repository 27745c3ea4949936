"""Tests for oauth_callback.testing.MockProvider over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from oauth_callback.testing import MockProvider

REDIRECT = "http://127.0.0.1:8765/callback"


def make_pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(follow_redirects=False, timeout=5) as client:
        yield client


def authorize_url(p: MockProvider, **overrides: Any) -> str:
    params: dict[str, Any] = {
        "response_type": "code",
        "client_id": p.client_id,
        "redirect_uri": REDIRECT,
        "state": "st-123",
        "scope": "openid read",
    }
    params.update(overrides)
    params = {k: v for k, v in params.items() if v is not None}
    return p.authorization_endpoint + "?" + urlencode(params)


def redirect_params(resp: httpx2.Response, expected_base: str = REDIRECT) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == expected_base
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def get_code(
    p: MockProvider, http: httpx2.Client, redirect_uri: str = REDIRECT, **overrides: Any
) -> tuple[str, str]:
    verifier, challenge = make_pkce()
    url = authorize_url(
        p,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        code_challenge_method="S256",
        **overrides,
    )
    params = redirect_params(http.get(url), redirect_uri)
    return params["code"], verifier


def exchange(
    p: MockProvider,
    http: httpx2.Client,
    code: str,
    verifier: str | None,
    redirect_uri: str = REDIRECT,
    **extra: Any,
) -> httpx2.Response:
    data: dict[str, Any] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": p.client_id,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    auth = extra.pop("auth", None)
    data.update(extra)
    data = {k: v for k, v in data.items() if v is not None}
    if auth is not None:
        return http.post(p.token_endpoint, data=data, auth=auth)
    return http.post(p.token_endpoint, data=data)


def login(p: MockProvider, http: httpx2.Client) -> dict[str, Any]:
    code, verifier = get_code(p, http)
    resp = exchange(p, http, code, verifier)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def refresh(
    p: MockProvider, http: httpx2.Client, token: str, client_id: str | None = None, **extra: Any
) -> httpx2.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    data["client_id"] = client_id or p.client_id
    data.update(extra)
    return http.post(p.token_endpoint, data=data)


def assert_error(resp: httpx2.Response, error: str, status: int = 400) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error


def userinfo_status(p: MockProvider, http: httpx2.Client, access_token: str) -> int:
    resp = http.get(p.issuer + "/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return resp.status_code


# --------------------------------------------------------------------------- metadata


def test_metadata_documents(provider: MockProvider, http: httpx2.Client) -> None:
    assert provider.issuer.startswith("http://127.0.0.1:")
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        resp = http.get(provider.issuer + path)
        assert resp.status_code == 200
        meta = resp.json()
        assert meta["issuer"] == provider.issuer
        assert meta["authorization_endpoint"] == provider.authorization_endpoint
        assert meta["token_endpoint"] == provider.token_endpoint
        assert meta["registration_endpoint"] == provider.registration_endpoint
        assert meta["response_types_supported"] == ["code"]
        assert meta["grant_types_supported"] == [
            "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code",
            "client_credentials",
        ]
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert set(meta["token_endpoint_auth_methods_supported"]) == {
            "none",
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        }
        assert meta["authorization_response_iss_parameter_supported"] is True
        assert "openid" in meta["scopes_supported"]
    assert http.get(provider.metadata_url).json() == provider.metadata()
    assert http.get(provider.issuer + "/nope").status_code == 404
    assert http.get(provider.token_endpoint).status_code == 405


# --------------------------------------------------------------------------- code flow


def test_full_code_flow_with_pkce(provider: MockProvider, http: httpx2.Client) -> None:
    verifier, challenge = make_pkce()
    url = authorize_url(provider, code_challenge=challenge, code_challenge_method="S256")
    params = redirect_params(http.get(url))
    assert params["state"] == "st-123"
    assert params["iss"] == provider.issuer
    assert params["code"]

    resp = exchange(provider, http, params["code"], verifier)
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["content-type"].startswith("application/json")
    tokens = resp.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["scope"] == "openid read"
    assert tokens["access_token"].startswith("at_")
    assert tokens["refresh_token"].startswith("rt_")
    assert provider.is_access_token_active(tokens["access_token"])
    assert provider.is_refresh_token_active(tokens["refresh_token"])

    me = http.get(
        provider.issuer + "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["sub"] == provider.subject
    assert provider.code_exchanges == 1
    assert provider.authorize_requests == 1


def test_redirect_uri_query_is_kept_and_iss_optional(http: httpx2.Client) -> None:
    with MockProvider(include_iss=False) as p:
        redirect = "http://localhost:9/cb?keep=1"
        _, challenge = make_pkce()
        url = authorize_url(
            p, redirect_uri=redirect, code_challenge=challenge, code_challenge_method="S256"
        )
        params = redirect_params(http.get(url), "http://localhost:9/cb")
        assert params["keep"] == "1"
        assert "iss" not in params
        assert "code" in params


def test_wrong_verifier_is_invalid_grant(provider: MockProvider, http: httpx2.Client) -> None:
    code, _ = get_code(provider, http)
    other_verifier, _ = make_pkce()
    assert_error(exchange(provider, http, code, other_verifier), "invalid_grant")
    assert provider.invalid_grant_count == 1
    assert provider.code_exchanges == 0


def test_missing_verifier_and_redirect_mismatch(
    provider: MockProvider, http: httpx2.Client
) -> None:
    code, _ = get_code(provider, http)
    assert_error(exchange(provider, http, code, None), "invalid_grant")
    code, verifier = get_code(provider, http)
    resp = exchange(provider, http, code, verifier, redirect_uri="http://127.0.0.1:1/other")
    assert_error(resp, "invalid_grant")


def test_code_reuse_is_invalid_grant_and_revokes(
    provider: MockProvider, http: httpx2.Client
) -> None:
    code, verifier = get_code(provider, http)
    first = exchange(provider, http, code, verifier)
    assert first.status_code == 200
    assert_error(exchange(provider, http, code, verifier), "invalid_grant")
    tokens = first.json()
    # OAuth 2.1 4.1.3: tokens issued from a replayed code are revoked.
    assert not provider.is_access_token_active(tokens["access_token"])
    assert not provider.is_refresh_token_active(tokens["refresh_token"])
    assert provider.code_exchanges == 1


def test_code_bound_to_client(provider: MockProvider, http: httpx2.Client) -> None:
    other_id, _ = provider.register_client()
    code, verifier = get_code(provider, http)
    assert_error(exchange(provider, http, code, verifier, client_id=other_id), "invalid_grant")


def test_pkce_required(provider: MockProvider, http: httpx2.Client) -> None:
    params = redirect_params(http.get(authorize_url(provider)))
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-123"
    assert "code" not in params
    _, challenge = make_pkce()
    plain = authorize_url(provider, code_challenge=challenge, code_challenge_method="plain")
    assert redirect_params(http.get(plain))["error"] == "invalid_request"
    bad_type = authorize_url(provider, response_type="token", code_challenge=challenge)
    assert redirect_params(http.get(bad_type))["error"] == "unsupported_response_type"


def test_pkce_optional_when_disabled(http: httpx2.Client) -> None:
    with MockProvider(require_pkce=False) as p:
        code = redirect_params(http.get(authorize_url(p)))["code"]
        resp = exchange(p, http, code, None)
        assert resp.status_code == 200
        assert resp.json()["access_token"].startswith("at_")


@pytest.mark.parametrize(
    "redirect",
    ["http://127.0.0.1:1/cb", "http://localhost:65000/", "http://[::1]:4242/callback"],
)
def test_any_loopback_redirect_for_preregistered_client(
    provider: MockProvider, http: httpx2.Client, redirect: str
) -> None:
    code, verifier = get_code(provider, http, redirect_uri=redirect)
    assert exchange(provider, http, code, verifier, redirect_uri=redirect).status_code == 200


@pytest.mark.parametrize(
    ("client_id", "redirect"),
    [
        ("unknown-client", REDIRECT),
        (None, REDIRECT),
        ("test-client", "https://evil.example/cb"),
        ("test-client", "http://192.168.1.5:8000/cb"),
        ("test-client", "http://127.0.0.1:8000/cb#frag"),
        ("test-client", None),
    ],
)
def test_invalid_client_or_redirect_is_400_page(
    provider: MockProvider, http: httpx2.Client, client_id: str | None, redirect: str | None
) -> None:
    _, challenge = make_pkce()
    url = authorize_url(
        provider,
        client_id=client_id,
        redirect_uri=redirect,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    resp = http.get(url)
    assert resp.status_code == 400
    assert "location" not in resp.headers
    assert resp.headers["content-type"].startswith("text/html")


def test_next_authorize_error_is_one_shot(provider: MockProvider, http: httpx2.Client) -> None:
    provider.next_authorize_error = "access_denied"
    _, challenge = make_pkce()
    url = authorize_url(provider, code_challenge=challenge, code_challenge_method="S256")
    params = redirect_params(http.get(url))
    assert params["error"] == "access_denied"
    assert params["state"] == "st-123"
    assert params["iss"] == provider.issuer
    assert provider.next_authorize_error is None
    assert "code" in redirect_params(http.get(url))


# --------------------------------------------------------------------------- refresh


def test_refresh_rotation_and_reuse_detection(provider: MockProvider, http: httpx2.Client) -> None:
    tokens = login(provider, http)
    rt1 = tokens["refresh_token"]

    resp = refresh(provider, http, rt1)
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    new = resp.json()
    rt2, at2 = new["refresh_token"], new["access_token"]
    assert rt2 != rt1
    assert new["access_token"] != tokens["access_token"]
    assert not provider.is_refresh_token_active(rt1)
    assert provider.is_refresh_token_active(rt2)

    # Replaying the rotated-away token revokes the whole grant.
    assert_error(refresh(provider, http, rt1), "invalid_grant")
    assert provider.reuse_detected == 1
    assert not provider.is_refresh_token_active(rt2)
    assert not provider.is_access_token_active(at2)
    assert not provider.is_access_token_active(tokens["access_token"])
    assert_error(refresh(provider, http, rt2), "invalid_grant")
    assert userinfo_status(provider, http, at2) == 401

    assert provider.refresh_count == 1
    assert provider.refresh_requests == 3
    assert provider.invalid_grant_count == 2


def test_concurrent_refresh_with_same_token_trips_reuse_detection(
    provider: MockProvider, http: httpx2.Client
) -> None:
    rt = login(provider, http)["refresh_token"]
    provider.token_delay = 0.2
    statuses: list[int] = []

    def worker() -> None:
        statuses.append(refresh(provider, http, rt).status_code)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert sorted(statuses) == [200, 400]
    assert provider.reuse_detected == 1
    assert provider.refresh_count == 1
    assert elapsed >= 0.2


def test_rotation_disabled_keeps_refresh_token(http: httpx2.Client) -> None:
    with MockProvider(rotate_refresh_tokens=False) as p:
        rt = login(p, http)["refresh_token"]
        for _ in range(3):
            resp = refresh(p, http, rt)
            assert resp.status_code == 200
            assert resp.json()["refresh_token"] == rt
        assert p.is_refresh_token_active(rt)
        assert p.refresh_count == 3
        assert p.reuse_detected == 0


def test_omit_refresh_token_on_refresh(http: httpx2.Client) -> None:
    with MockProvider(omit_refresh_token_on_refresh=True) as p:
        rt = login(p, http)["refresh_token"]
        first = refresh(p, http, rt)
        assert first.status_code == 200
        assert "refresh_token" not in first.json()
        assert p.is_refresh_token_active(rt)
        assert refresh(p, http, rt).status_code == 200
        assert p.refresh_count == 2


def test_no_refresh_token_issued(http: httpx2.Client) -> None:
    with MockProvider(issue_refresh_token=False, expires_in=None) as p:
        tokens = login(p, http)
        assert "refresh_token" not in tokens
        assert "expires_in" not in tokens
        assert p.is_access_token_active(tokens["access_token"])


def test_refresh_errors(provider: MockProvider, http: httpx2.Client) -> None:
    rt = login(provider, http)["refresh_token"]
    assert_error(refresh(provider, http, "rt_bogus"), "invalid_grant")
    other_id, _ = provider.register_client()
    assert_error(refresh(provider, http, rt, client_id=other_id), "invalid_grant")
    assert_error(refresh(provider, http, rt, scope="admin"), "invalid_scope")
    narrowed = refresh(provider, http, rt, scope="read")
    assert narrowed.status_code == 200
    assert narrowed.json()["scope"] == "read"
    assert provider.reuse_detected == 0
    bad_grant = http.post(
        provider.token_endpoint, data={"grant_type": "password", "client_id": provider.client_id}
    )
    assert_error(bad_grant, "unsupported_grant_type")
    as_json = http.post(
        provider.token_endpoint, json={"grant_type": "refresh_token", "refresh_token": rt}
    )
    assert_error(as_json, "invalid_request")


def test_revoke_all(provider: MockProvider, http: httpx2.Client) -> None:
    tokens = login(provider, http)
    provider.revoke_all()
    assert not provider.is_access_token_active(tokens["access_token"])
    assert_error(refresh(provider, http, tokens["refresh_token"]), "invalid_grant")
    assert provider.reuse_detected == 0


# --------------------------------------------------------------------------- clients


def test_dynamic_client_registration_public(provider: MockProvider, http: httpx2.Client) -> None:
    resp = http.post(
        provider.registration_endpoint,
        json={
            "redirect_uris": ["http://127.0.0.1:5000/callback"],
            "client_name": "My CLI",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        },
    )
    assert resp.status_code == 201
    reg = resp.json()
    assert reg["client_id"]
    assert "client_secret" not in reg
    assert reg["client_name"] == "My CLI"
    assert reg["redirect_uris"] == ["http://127.0.0.1:5000/callback"]
    assert isinstance(reg["client_id_issued_at"], int)
    assert provider.registrations == 1

    # Loopback: any port, same path.
    other_port = "http://127.0.0.1:6123/callback"
    code, verifier = get_code(provider, http, redirect_uri=other_port, client_id=reg["client_id"])
    resp = exchange(
        provider, http, code, verifier, redirect_uri=other_port, client_id=reg["client_id"]
    )
    assert resp.status_code == 200
    # A different path is not registered.
    bad = authorize_url(
        provider, client_id=reg["client_id"], redirect_uri="http://127.0.0.1:5000/other"
    )
    assert http.get(bad).status_code == 400


def test_dynamic_client_registration_rejects_bad_metadata(
    provider: MockProvider, http: httpx2.Client
) -> None:
    cases: list[tuple[Any, str]] = [
        ({"client_name": "x"}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://example.com/cb"]}, "invalid_redirect_uri"),
        (
            {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"},
            "invalid_client_metadata",
        ),
        ({"redirect_uris": [REDIRECT], "grant_types": ["password"]}, "invalid_client_metadata"),
        (["not", "an", "object"], "invalid_client_metadata"),
    ]
    for body, error in cases:
        assert_error(http.post(provider.registration_endpoint, json=body), error)
    assert provider.registrations == 0


@pytest.fixture
def confidential(provider: MockProvider, http: httpx2.Client) -> tuple[str, str]:
    resp = http.post(
        provider.registration_endpoint,
        json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"},
    )
    assert resp.status_code == 201
    reg = resp.json()
    assert reg["client_secret_expires_at"] == 0
    assert reg["token_endpoint_auth_method"] == "client_secret_basic"
    return reg["client_id"], reg["client_secret"]


def test_confidential_client_basic_auth(
    provider: MockProvider, http: httpx2.Client, confidential: tuple[str, str]
) -> None:
    cid, secret = confidential
    code, verifier = get_code(provider, http, client_id=cid)
    resp = exchange(
        provider, http, code, verifier, client_id=None, auth=httpx2.BasicAuth(cid, secret)
    )
    assert resp.status_code == 200
    assert resp.json()["access_token"].startswith("at_")


def test_confidential_client_post_auth(
    provider: MockProvider, http: httpx2.Client, confidential: tuple[str, str]
) -> None:
    cid, secret = confidential
    code, verifier = get_code(provider, http, client_id=cid)
    resp = exchange(provider, http, code, verifier, client_id=cid, client_secret=secret)
    assert resp.status_code == 200
    rt = resp.json()["refresh_token"]
    again = refresh(provider, http, rt, client_id=cid, client_secret=secret)
    assert again.status_code == 200


def test_confidential_client_wrong_or_missing_secret(
    provider: MockProvider, http: httpx2.Client, confidential: tuple[str, str]
) -> None:
    cid, _ = confidential
    code, verifier = get_code(provider, http, client_id=cid)
    wrong_basic = exchange(
        provider, http, code, verifier, client_id=None, auth=httpx2.BasicAuth(cid, "nope")
    )
    assert_error(wrong_basic, "invalid_client", 401)
    assert "www-authenticate" in wrong_basic.headers
    assert_error(
        exchange(provider, http, code, verifier, client_id=cid, client_secret="nope"),
        "invalid_client",
        401,
    )
    assert_error(exchange(provider, http, code, verifier, client_id=cid), "invalid_client", 401)
    assert_error(exchange(provider, http, code, verifier, client_id="ghost"), "invalid_client", 401)
    # Failed client authentication does not burn the code.
    ok = exchange(provider, http, code, verifier, client_id=cid, client_secret=confidential[1])
    assert ok.status_code == 200


def test_register_client_helper(provider: MockProvider, http: httpx2.Client) -> None:
    cid, secret = provider.register_client(redirect_uris=[REDIRECT], confidential=True)
    assert secret is not None
    public_id, public_secret = provider.register_client()
    assert public_secret is None
    assert cid != public_id
    code, verifier = get_code(provider, http, client_id=cid)
    resp = exchange(provider, http, code, verifier, client_id=cid, client_secret=secret)
    assert resp.status_code == 200
    assert provider.registrations == 0


def test_preregistered_clients_argument(http: httpx2.Client) -> None:
    with MockProvider(clients={"conf": "s3cret", "pub": None}) as p:
        code, verifier = get_code(p, http, client_id="conf")
        resp = exchange(
            p, http, code, verifier, client_id=None, auth=httpx2.BasicAuth("conf", "s3cret")
        )
        assert resp.status_code == 200
        code, verifier = get_code(p, http, client_id="pub")
        assert exchange(p, http, code, verifier, client_id="pub").status_code == 200


# --------------------------------------------------------------------------- consent


def consent_request_id(html_text: str) -> str:
    marker = "name='request_id' value='"
    start = html_text.index(marker) + len(marker)
    return html_text[start : html_text.index("'", start)]


@pytest.mark.parametrize("action", ["approve", "deny"])
def test_consent_page(http: httpx2.Client, action: str) -> None:
    with MockProvider(consent=True) as p:
        verifier, challenge = make_pkce()
        url = authorize_url(p, code_challenge=challenge, code_challenge_method="S256")
        page = http.get(url)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<form" in page.text
        assert "value='approve'" in page.text
        assert "value='deny'" in page.text
        request_id = consent_request_id(page.text)

        resp = http.post(
            p.authorization_endpoint, data={"request_id": request_id, "action": action}
        )
        params = redirect_params(resp)
        assert params["state"] == "st-123"
        if action == "approve":
            assert exchange(p, http, params["code"], verifier).status_code == 200
        else:
            assert params["error"] == "access_denied"
            assert "code" not in params
        # The pending request is single-use.
        replay = http.post(
            p.authorization_endpoint, data={"request_id": request_id, "action": action}
        )
        assert replay.status_code == 400


# --------------------------------------------------------------------------- knobs


def test_fail_next_token_requests(provider: MockProvider, http: httpx2.Client) -> None:
    code, verifier = get_code(provider, http)
    provider.fail_next_token_requests(2)
    for _ in range(2):
        assert_error(exchange(provider, http, code, verifier), "temporarily_unavailable", 503)
    ok = exchange(provider, http, code, verifier)  # the code was not consumed
    assert ok.status_code == 200

    provider.fail_next_token_requests(1, status=502, body="Bad Gateway")
    resp = refresh(provider, http, ok.json()["refresh_token"])
    assert resp.status_code == 502
    assert resp.text == "Bad Gateway"
    assert provider.is_refresh_token_active(ok.json()["refresh_token"])
    assert provider.refresh_requests == 1
    assert provider.refresh_count == 0
    assert provider.code_exchanges == 1


def test_token_requests_are_recorded(provider: MockProvider, http: httpx2.Client) -> None:
    code, verifier = get_code(provider, http)
    exchange(provider, http, code, verifier)
    recorded = provider.token_requests
    assert len(recorded) == 1
    assert recorded[0]["grant_type"] == "authorization_code"
    assert recorded[0]["code"] == code
    assert recorded[0]["code_verifier"] == verifier
    recorded.clear()  # a copy
    assert len(provider.token_requests) == 1
    stats = provider.stats
    assert stats["token_requests"] == 1
    assert stats["code_exchanges"] == 1
    assert stats["authorize_requests"] == 1


def test_token_delay(provider: MockProvider, http: httpx2.Client) -> None:
    provider.token_delay = 0.15
    code, verifier = get_code(provider, http)
    start = time.monotonic()
    assert exchange(provider, http, code, verifier).status_code == 200
    assert time.monotonic() - start >= 0.15


def test_userinfo_requires_valid_bearer(provider: MockProvider, http: httpx2.Client) -> None:
    tokens = login(provider, http)
    at = tokens["access_token"]
    assert userinfo_status(provider, http, at) == 200
    missing = http.get(provider.issuer + "/userinfo")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bogus = http.get(provider.issuer + "/userinfo", headers={"Authorization": "Bearer at_nope"})
    assert bogus.status_code == 401
    assert 'error="invalid_token"' in bogus.headers["www-authenticate"]

    provider.expire_access_tokens()
    assert not provider.is_access_token_active(at)
    assert userinfo_status(provider, http, at) == 401
    # Refreshing still works and yields a working token.
    new_at = refresh(provider, http, tokens["refresh_token"]).json()["access_token"]
    assert userinfo_status(provider, http, new_at) == 200


def test_expires_in_settable_at_run_time(provider: MockProvider, http: httpx2.Client) -> None:
    provider.expires_in = 1
    tokens = login(provider, http)
    assert tokens["expires_in"] == 1
    assert provider.is_access_token_active(tokens["access_token"])
    provider.expires_in = None
    new = refresh(provider, http, tokens["refresh_token"]).json()
    assert "expires_in" not in new
    assert provider.is_access_token_active(new["access_token"])


# --------------------------------------------------------------------------- lifecycle


def test_start_stop_restart_keeps_issuer_and_state(http: httpx2.Client) -> None:
    p = MockProvider()
    with pytest.raises(RuntimeError):
        _ = p.issuer
    p.start()
    try:
        with pytest.raises(RuntimeError):
            p.start()
        issuer = p.issuer
        rt = login(p, http)["refresh_token"]
        p.stop()
        assert not p.running
        with pytest.raises(httpx2.TransportError):
            http.get(p.metadata_url)
        p.start()
        assert p.issuer == issuer
        assert refresh(p, http, rt).status_code == 200
    finally:
        p.stop()
    p.stop()  # idempotent
    assert p.errors == []
