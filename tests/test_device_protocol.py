"""The pure RFC 8628 pieces (oauth_callback.device): requests, response parsing, the polling decision."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from oauth_callback.device import (
    DEFAULT_INTERVAL,
    DEVICE_CODE_GRANT,
    MIN_INTERVAL,
    SLOW_DOWN_STEP,
    DeviceAuthorization,
    device_authorization_flow,
    device_authorization_request,
    device_poll_flow,
    device_token_request,
    parse_device_authorization_response,
)
from oauth_callback.errors import DiscoveryError, OAuthError, TokenEndpointError
from oauth_callback.protocol import Backoff, RawResponse, ServerMetadata, TokenRequest

JSON = {"content-type": "application/json"}
DEVICE_CODE = "dc_SECRET-device-code-0123456789"


def good_body(**overrides: object) -> bytes:
    data: dict[str, object] = {
        "device_code": DEVICE_CODE,
        "user_code": "WDJB-MJHT",
        "verification_uri": "https://example.com/device",
        "verification_uri_complete": "https://example.com/device?user_code=WDJB-MJHT",
        "expires_in": 1800,
        "interval": 5,
    }
    data.update(overrides)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def form_of(request: TokenRequest) -> dict[str, list[str]]:
    return parse_qs(request.body.decode())


# --------------------------------------------------------------------------- requests


def test_device_authorization_request_public_client_scope_and_resource() -> None:
    request = device_authorization_request(
        "https://as.example/device", client_id="cli", scope=["read", "write"],
        resource=["https://api.example/a", "https://api.example/b"],
    )
    assert request.url == "https://as.example/device"
    assert form_of(request) == {
        "client_id": ["cli"], "scope": ["read write"],
        "resource": ["https://api.example/a", "https://api.example/b"],
    }
    assert "Authorization" not in request.headers
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_device_authorization_request_client_auth_like_the_token_endpoint() -> None:
    basic = device_authorization_request("https://as/d", client_id="c i", client_secret="s:cret")
    assert form_of(basic) == {}
    decoded = base64.b64decode(basic.headers["Authorization"].split()[1]).decode()
    assert decoded == "c+i:s%3Acret"
    post = device_authorization_request(
        "https://as/d", client_id="c", client_secret="sec", auth_method="client_secret_post",
        scope="read",
    )
    assert form_of(post) == {"client_id": ["c"], "client_secret": ["sec"], "scope": ["read"]}
    assert "sec" in post.secrets()
    with pytest.raises(ValueError, match="needs a client_secret"):
        device_authorization_request("https://as/d", client_id="c", auth_method="client_secret_post")


def test_device_token_request_hides_the_device_code() -> None:
    request = device_token_request(
        "https://as/token", device_code=DEVICE_CODE, client_id="cli", resource="https://api"
    )
    assert form_of(request) == {
        "grant_type": [DEVICE_CODE_GRANT], "device_code": [DEVICE_CODE], "client_id": ["cli"],
        "resource": ["https://api"],
    }
    assert request.grant_type == DEVICE_CODE_GRANT
    assert DEVICE_CODE in request.secrets()
    assert DEVICE_CODE not in repr(request)


# --------------------------------------------------------------------------- responses


def test_parse_good_response() -> None:
    auth = parse_device_authorization_response(200, JSON, good_body(), now=1000.0)
    assert auth.device_code == DEVICE_CODE
    assert auth.user_code == "WDJB-MJHT"
    assert auth.verification_uri == "https://example.com/device"
    assert auth.verification_uri_complete == "https://example.com/device?user_code=WDJB-MJHT"
    assert (auth.expires_in, auth.interval, auth.expires_at) == (1800.0, 5.0, 2800.0)
    assert DEVICE_CODE not in repr(auth) and DEVICE_CODE not in str(auth)
    assert "WDJB-MJHT" in repr(auth)


def test_parse_defaults_and_google_verification_url() -> None:
    body = good_body(verification_uri=None, verification_uri_complete=None, interval=None,
                     verification_url="https://www.google.com/device")
    auth = parse_device_authorization_response(200, JSON, body)
    assert auth.interval == DEFAULT_INTERVAL
    assert auth.verification_uri == "https://www.google.com/device"
    assert auth.verification_uri_complete is None


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"device_code": None}, "device_code"),
        ({"device_code": 7}, "device_code"),
        ({"user_code": None}, "user_code"),
        ({"user_code": "AB\x1b[2JCD"}, "user_code"),  # a terminal escape
        ({"user_code": "AB\nOpen evil.example"}, "user_code"),
        ({"user_code": "X" * 600}, "user_code"),
        ({"verification_uri": None}, "verification_uri"),
        ({"verification_uri": "javascript:alert(1)"}, "verification_uri"),
        ({"verification_uri": "https://a.example/\x07"}, "verification_uri"),
        ({"verification_uri_complete": "file:///etc/passwd"}, "verification_uri_complete"),
        ({"expires_in": None}, "expires_in"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": "600"}, "expires_in"),
        ({"expires_in": True}, "expires_in"),
        ({"interval": -1}, "interval"),
        ({"interval": "5"}, "interval"),
    ],
)
def test_parse_rejects_malformed_fields(override: dict[str, object], needle: str) -> None:
    with pytest.raises(TokenEndpointError, match=needle) as info:
        parse_device_authorization_response(200, JSON, good_body(**override))
    assert DEVICE_CODE not in str(info.value)
    assert info.value.status_code == 200


def test_parse_errors() -> None:
    body = json.dumps({"error": "invalid_client", "error_description": f"bad {DEVICE_CODE}"})
    with pytest.raises(OAuthError) as info:
        parse_device_authorization_response(401, JSON, body.encode(), secrets=[DEVICE_CODE])
    assert info.value.error == "invalid_client"
    assert DEVICE_CODE not in str(info.value)
    with pytest.raises(TokenEndpointError) as unavailable:
        parse_device_authorization_response(503, {"retry-after": "7"}, b"down")
    assert (unavailable.value.status_code, unavailable.value.retry_after) == (503, 7.0)
    with pytest.raises(TokenEndpointError, match="not a JSON object") as html:
        parse_device_authorization_response(200, {}, f"<p>{DEVICE_CODE}</p>".encode())
    assert DEVICE_CODE not in str(html.value)
    with pytest.raises(TokenEndpointError, match="HTTP 404"):
        parse_device_authorization_response(404, JSON, b"{}")


def test_device_authorization_flow_posts_once() -> None:
    request = device_authorization_request("https://as/d", client_id="c")
    flow = device_authorization_flow(request, now=lambda: 50.0)
    assert next(flow) is request
    with pytest.raises(StopIteration) as done:
        flow.send(RawResponse(200, JSON, good_body(expires_in=10)))
    auth = done.value.value
    assert isinstance(auth, DeviceAuthorization) and auth.expires_at == 60.0
    failing = device_authorization_flow(request)
    next(failing)
    with pytest.raises(TokenEndpointError, match="unreachable"):
        failing.send(TokenEndpointError("unreachable"))


def test_metadata_device_authorization_endpoint() -> None:
    base = {
        "issuer": "https://as.example",
        "authorization_endpoint": "https://as.example/authorize",
        "token_endpoint": "https://as.example/token",
    }
    assert ServerMetadata.from_json(base, issuer="https://as.example").device_authorization_endpoint is None
    meta = ServerMetadata.from_json(
        {**base, "device_authorization_endpoint": "https://as.example/device/code"},
        issuer="https://as.example",
    )
    assert meta.device_authorization_endpoint == "https://as.example/device/code"
    with pytest.raises(DiscoveryError, match="device_authorization_endpoint"):
        ServerMetadata.from_json(
            {**base, "device_authorization_endpoint": "http://evil.example/device"},
            issuer="https://as.example",
        )


# --------------------------------------------------------------------------- polling decision


class FakeClock:
    """A monotonic clock the test advances by exactly what the flow asks to sleep."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def error(code: str, status: int = 400) -> RawResponse:
    return RawResponse(status, JSON, json.dumps({"error": code}).encode())


TOKENS = RawResponse(200, JSON, json.dumps({"access_token": "at", "token_type": "Bearer",
                                            "expires_in": 60}).encode())


def auth(interval: float = 5, expires_in: float = 600) -> DeviceAuthorization:
    return DeviceAuthorization(DEVICE_CODE, "ABCD-EFGH", "https://as/device", None,
                               expires_in, interval, issued_at=0.0)


def run(flow_answers: list[RawResponse | TokenEndpointError], *, interval: float = 5,
        expires_in: float = 600, max_transient_errors: int = 3) -> tuple[list[tuple[float, float]], object]:
    """Drive device_poll_flow with a fake clock; return [(time sent, wait before)] and the outcome."""
    clock = FakeClock()
    request = device_token_request("https://as/token", device_code=DEVICE_CODE, client_id="c")
    flow = device_poll_flow(auth(interval, expires_in), request, clock=clock, now=clock,
                            max_transient_errors=max_transient_errors)
    answers: Iterator[RawResponse | TokenEndpointError] = iter(flow_answers)
    sent: list[tuple[float, float]] = []
    reply: object = None
    waited = 0.0
    try:
        while True:
            item = flow.send(reply)  # type: ignore[arg-type]
            if isinstance(item, Backoff):
                clock.t += item.seconds
                waited = item.seconds
                reply = None
            else:
                assert item is request
                sent.append((clock.t, waited))
                reply = next(answers)
    except StopIteration as stop:
        return sent, stop.value
    except (OAuthError, TokenEndpointError) as exc:
        return sent, exc


def test_rule_1_3_pending_then_tokens_at_the_interval() -> None:
    sent, outcome = run([error("authorization_pending"), error("authorization_pending"), TOKENS])
    assert [t for t, _ in sent] == [5.0, 10.0, 15.0]
    assert getattr(outcome, "access_token", None) == "at"


def test_rule_2_floor_on_a_zero_interval() -> None:
    sent, _ = run([error("authorization_pending"), TOKENS], interval=0)
    assert [t for t, _ in sent] == [MIN_INTERVAL, 2 * MIN_INTERVAL]


def test_rule_4_slow_down_adds_five_seconds_each_time() -> None:
    sent, outcome = run([
        error("authorization_pending"), error("slow_down"), error("slow_down"),
        error("authorization_pending"), TOKENS,
    ])
    waits = [w for _, w in sent]
    assert waits == [5.0, 5.0, 5 + SLOW_DOWN_STEP, 5 + 2 * SLOW_DOWN_STEP, 5 + 2 * SLOW_DOWN_STEP]
    assert getattr(outcome, "access_token", None) == "at"


@pytest.mark.parametrize("code", ["access_denied", "expired_token", "invalid_grant", "invalid_client"])
def test_rule_5_final_errors(code: str) -> None:
    sent, outcome = run([error("authorization_pending"), error(code)])
    assert isinstance(outcome, OAuthError) and outcome.error == code
    assert len(sent) == 2


def test_rule_6_network_errors_back_off_never_sooner() -> None:
    down = TokenEndpointError("could not reach the token endpoint")
    sent, outcome = run([error("authorization_pending"), down, down, TOKENS], interval=5)
    waits = [w for _, w in sent]
    assert waits == [5.0, 5.0, 10.0, 20.0]
    assert all(w >= 5.0 for w in waits)
    assert getattr(outcome, "access_token", None) == "at"


def test_rule_6_retry_after_and_5xx_then_give_up() -> None:
    busy = RawResponse(503, {"retry-after": "30"}, b"")
    sent, outcome = run([busy, busy, busy, busy], interval=5, max_transient_errors=3)
    assert [w for _, w in sent] == [5.0, 30.0, 30.0, 40.0]
    assert isinstance(outcome, TokenEndpointError) and outcome.status_code == 503
    assert len(sent) == 4  # 1 + max_transient_errors


def test_rule_6_failures_counter_resets_after_an_answer() -> None:
    down = TokenEndpointError("down")
    sent, outcome = run([down, error("authorization_pending"), down, TOKENS],
                        interval=5, max_transient_errors=1)
    assert [w for _, w in sent] == [5.0, 10.0, 5.0, 10.0]
    assert getattr(outcome, "access_token", None) == "at"


def test_rule_6_http_400_without_oauth_error_is_final() -> None:
    _sent, outcome = run([RawResponse(400, {}, b"nope")])
    assert isinstance(outcome, TokenEndpointError) and outcome.status_code == 400


def test_rule_7_local_deadline() -> None:
    sent, outcome = run([error("authorization_pending")] * 10, interval=5, expires_in=17)
    assert [t for t, _ in sent] == [5.0, 10.0, 15.0]  # a 4th poll would be at 20 >= 17
    assert isinstance(outcome, OAuthError) and outcome.error == "expired_token"
    # A slow_down that pushes the next poll past the deadline ends it too.
    sent, outcome = run([error("slow_down")] * 5, interval=5, expires_in=14)
    assert [t for t, _ in sent] == [5.0]
    assert isinstance(outcome, OAuthError) and outcome.error == "expired_token"


def test_no_secret_in_poll_errors() -> None:
    echo = RawResponse(400, JSON, json.dumps({"error": "invalid_grant",
                                              "error_description": f"bad {DEVICE_CODE}"}).encode())
    _, outcome = run([echo])
    assert isinstance(outcome, OAuthError)
    assert DEVICE_CODE not in str(outcome) and "<redacted>" in str(outcome)
