"""MockProvider's device authorization grant (RFC 8628) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from oauth_callback.testing import DEVICE_CODE_GRANT, MockProvider

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(follow_redirects=False, timeout=5) as client:
        yield client


def start(p: MockProvider, http: httpx2.Client, **form: str) -> dict[str, Any]:
    response = http.post(p.device_authorization_endpoint, data={"client_id": p.client_id, **form})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def poll(p: MockProvider, http: httpx2.Client, device_code: str, **extra: str) -> httpx2.Response:
    return http.post(p.token_endpoint, data={
        "grant_type": DEVICE_CODE_GRANT, "device_code": device_code, "client_id": p.client_id,
        **extra,
    })


def test_metadata_advertises_the_device_endpoint(provider: MockProvider, http: httpx2.Client) -> None:
    meta = http.get(provider.metadata_url).json()
    assert meta["device_authorization_endpoint"] == provider.device_authorization_endpoint
    assert DEVICE_CODE_GRANT in meta["grant_types_supported"]
    provider.device_flow = False
    assert "device_authorization_endpoint" not in http.get(provider.metadata_url).json()
    assert http.post(provider.device_authorization_endpoint, data={"client_id": "x"}).status_code == 404


def test_device_authorization_response(provider: MockProvider, http: httpx2.Client) -> None:
    provider.device_interval = 2
    provider.device_expires_in = 90
    data = start(provider, http, scope="read write", resource="https://api.example")
    assert set(data) == {"device_code", "user_code", "verification_uri",
                         "verification_uri_complete", "expires_in", "interval"}
    assert data["verification_uri"] == provider.verification_uri
    assert data["verification_uri_complete"].startswith(provider.verification_uri + "?user_code=")
    assert (data["expires_in"], data["interval"]) == (90, 2)
    assert len(data["user_code"]) == 9 and data["user_code"][4] == "-"
    assert provider.user_codes == [data["user_code"]]
    assert provider.device_authorization_requests == [
        {"client_id": provider.client_id, "scope": "read write", "resource": "https://api.example"}
    ]
    assert provider.stats["device_authorizations"] == 1


def test_device_authorization_client_errors(provider: MockProvider, http: httpx2.Client) -> None:
    client_id, secret = provider.register_client(confidential=True)
    assert http.post(provider.device_authorization_endpoint, data={"client_id": "nope"}).json()[
        "error"] == "invalid_client"
    wrong = http.post(provider.device_authorization_endpoint, data={"client_id": client_id},
                      auth=(client_id, "wrong"))
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    right = http.post(provider.device_authorization_endpoint, data={}, auth=(client_id, secret or ""))
    assert right.status_code == 200
    bad_scope = http.post(provider.device_authorization_endpoint,
                          data={"client_id": provider.client_id, "scope": "admin"})
    assert bad_scope.json()["error"] == "invalid_scope"


def test_pending_approve_tokens_then_used(provider: MockProvider, http: httpx2.Client) -> None:
    provider.device_interval = 0.2
    data = start(provider, http, scope="read")
    pending = poll(provider, http, data["device_code"])
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    assert provider.approve_device(data["user_code"].lower().replace("-", " "))
    assert not provider.approve_device(data["user_code"])  # answered already
    time.sleep(0.25)  # the provider's own interval, so the poll is not answered slow_down
    tokens = poll(provider, http, data["device_code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["scope"] == "read" and provider.is_access_token_active(body["access_token"])
    assert provider.is_refresh_token_active(body["refresh_token"])
    again = poll(provider, http, data["device_code"])
    assert again.json()["error"] == "invalid_grant"
    answers = [p.answer for p in provider.device_polls]
    assert answers == ["authorization_pending", "tokens", "invalid_grant"]
    assert provider.stats["device_polls"] == 3 and provider.stats["device_approvals"] == 1


def test_deny_expire_and_wrong_client(provider: MockProvider, http: httpx2.Client) -> None:
    denied = start(provider, http)
    assert provider.deny_device(denied["user_code"])
    assert poll(provider, http, denied["device_code"]).json()["error"] == "access_denied"
    expired = start(provider, http)
    provider.expire_device_codes()
    assert poll(provider, http, expired["device_code"]).json()["error"] == "expired_token"
    assert not provider.approve_device(expired["user_code"])
    other, _ = provider.register_client()
    stolen = http.post(provider.token_endpoint, data={
        "grant_type": DEVICE_CODE_GRANT, "device_code": start(provider, http)["device_code"],
        "client_id": other})
    assert stolen.json()["error"] == "invalid_grant"
    assert poll(provider, http, "dc_unknown").json()["error"] == "invalid_grant"
    assert provider.stats["device_denials"] == 1


def test_polling_too_fast_is_slow_down_and_grows_the_interval(
    provider: MockProvider, http: httpx2.Client
) -> None:
    provider.device_interval = 30
    data = start(provider, http)
    assert poll(provider, http, data["device_code"]).json()["error"] == "authorization_pending"
    assert poll(provider, http, data["device_code"]).json()["error"] == "slow_down"
    polls = provider.device_polls
    assert [p.interval for p in polls] == [30, 30]
    assert provider.stats["device_polls_too_fast"] == 1
    assert provider.stats["device_slow_downs"] == 1
    assert poll(provider, http, data["device_code"]).json()["error"] == "slow_down"
    assert provider.device_polls[-1].interval == 35  # grown by the first slow_down
    provider.enforce_device_interval = False
    assert poll(provider, http, data["device_code"]).json()["error"] == "authorization_pending"
    assert provider.stats["device_polls_too_fast"] == 3


def test_slow_down_knob_and_recorded_times(provider: MockProvider, http: httpx2.Client) -> None:
    provider.enforce_device_interval = False
    provider.slow_down_next_polls(2)
    data = start(provider, http)
    answers = [poll(provider, http, data["device_code"]).json()["error"] for _ in range(3)]
    assert answers == ["slow_down", "slow_down", "authorization_pending"]
    times = [p.at for p in provider.device_polls]
    assert times == sorted(times) and len(times) == 3
    # token_request_times covers every POST /token, parallel to token_requests.
    assert provider.token_request_times == times
    assert [r["grant_type"] for r in provider.token_requests] == [DEVICE_CODE_GRANT] * 3


def test_injected_failures_are_recorded_as_polls(provider: MockProvider, http: httpx2.Client) -> None:
    data = start(provider, http)
    provider.fail_next_token_requests(1, 503)
    assert poll(provider, http, data["device_code"]).status_code == 503
    assert [p.answer for p in provider.device_polls] == ["HTTP 503"]


def test_device_page_approve_and_deny(provider: MockProvider, http: httpx2.Client) -> None:
    data = start(provider, http)
    page = http.get(data["verification_uri_complete"])
    assert page.status_code == 200
    assert f"value='{data['user_code']}'" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    wrong = http.post(provider.verification_uri, data={"user_code": "ZZZZ-ZZZZ", "action": "approve"})
    assert wrong.status_code == 400 and "unknown, expired or already used" in wrong.text
    ok = http.post(provider.verification_uri, data={"user_code": data["user_code"], "action": "approve"})
    assert ok.status_code == 200 and "Device connected" in ok.text
    second = start(provider, http)
    no = http.post(provider.verification_uri, data={"user_code": second["user_code"], "action": "deny"})
    assert no.status_code == 200 and "Access denied" in no.text
    assert provider.stats["device_approvals"] == 1 and provider.stats["device_denials"] == 1


def test_device_page_escapes_the_prefilled_code(provider: MockProvider, http: httpx2.Client) -> None:
    page = http.get(provider.verification_uri, params={"user_code": "'><script>x</script>"})
    assert "<script>" not in page.text and "&#x27;&gt;&lt;script&gt;" in page.text
