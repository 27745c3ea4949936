"""OAuthClient.login_device / login_device_async (RFC 8628) against the mock provider over real HTTP.

Polling timing is asserted from the provider's recorded arrival times, never
from the test's own sleeps.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from oauth_callback import FileStore, OAuthClient
from oauth_callback.device import DeviceAuthorization
from oauth_callback.errors import CallbackCancelled, DiscoveryError, OAuthError, TokenEndpointError
from oauth_callback.testing import DEVICE_CODE_GRANT, MockProvider

from .conftest import run_python


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        p.device_interval = 1
        yield p


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "tokens.json")


def client_for(p: MockProvider, **kwargs: object) -> OAuthClient:
    return OAuthClient(p.client_id, issuer=p.issuer, scope="read", **kwargs)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def in_background(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def poll_gaps(p: MockProvider) -> list[float]:
    """Seconds between the device authorization request and each poll, and between polls."""
    times = [p.device_authorization_times[-1], *(poll.at for poll in p.device_polls)]
    return [b - a for a, b in itertools.pairwise(times)]


def device_codes_sent(p: MockProvider) -> list[str]:
    return [r["device_code"] for r in p.token_requests if r.get("grant_type") == DEVICE_CODE_GRANT]


def test_approval_stores_tokens_and_client_like_a_browser_login(
    provider: MockProvider, store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="oauth_callback")
    shown: list[DeviceAuthorization] = []

    def on_code(grant: DeviceAuthorization) -> None:
        shown.append(grant)
        assert provider.approve_device(grant.user_code)

    tokens = client_for(provider).login_device(store, "dev", on_code=on_code)
    assert [g.user_code for g in shown] == provider.user_codes
    assert shown[0].verification_uri == provider.verification_uri
    assert provider.is_access_token_active(tokens.access_token)
    assert store.get("dev") == tokens
    info = store.get_client("dev")
    assert info is not None and info.client_id == provider.client_id
    assert info.issuer == provider.issuer and info.token_endpoint == provider.token_endpoint
    assert provider.device_authorization_requests == [{"client_id": provider.client_id, "scope": "read"}]
    # Rule 1: even an approval given at once is polled for after one interval.
    assert [p.answer for p in provider.device_polls] == ["tokens"]
    assert poll_gaps(provider)[0] >= 1.0
    # The device code never reaches a log line or a repr.
    (device_code,) = device_codes_sent(provider)
    assert device_code not in caplog.text and device_code not in repr(shown[0])


def test_a_later_process_refreshes_with_only_the_store_and_key(
    provider: MockProvider, store: FileStore
) -> None:
    client_for(provider).login_device(store, "dev", on_code=lambda g: provider.approve_device(g.user_code))
    provider.expire_access_tokens()
    store.update("dev", lambda t: None if t is None else t.replace(expires_at=time.time() - 1))
    result = run_python(f"""
        from oauth_callback import FileStore, TokenManager
        print(TokenManager(FileStore({str(store.path)!r}), "dev").access_token())
    """)
    assert provider.refresh_count == 1
    assert provider.is_access_token_active(result.stdout.strip())


def test_pending_slow_down_then_approval_timing_from_the_provider(
    provider: MockProvider, store: FileStore
) -> None:
    def person() -> None:
        wait_until(lambda: len(provider.device_polls) >= 1)
        provider.slow_down_next_polls(1)
        wait_until(lambda: len(provider.device_polls) >= 2)
        provider.approve_device(provider.user_codes[-1])

    helper = in_background(person)
    tokens = client_for(provider).login_device(store, "dev", on_code=lambda g: None)
    helper.join(5)
    assert [p.answer for p in provider.device_polls] == ["authorization_pending", "slow_down", "tokens"]
    first, second, third = poll_gaps(provider)
    assert first >= 1.0 and second >= 1.0  # the interval
    assert third >= 1.0 + 5.0  # slow_down: +5 s from then on (RFC 8628 3.5)
    assert provider.stats["device_polls_too_fast"] == 0
    assert store.get("dev") == tokens


def test_denial_stores_nothing(provider: MockProvider, store: FileStore) -> None:
    with pytest.raises(OAuthError) as info:
        client_for(provider).login_device(store, "dev", on_code=lambda g: provider.deny_device(g.user_code))
    assert info.value.error == "access_denied"
    assert store.get("dev") is None and store.get_client("dev") is None
    for code in device_codes_sent(provider):
        assert code not in str(info.value)


def test_expiry_at_the_provider_and_locally(provider: MockProvider, store: FileStore) -> None:
    in_background(lambda: (wait_until(lambda: len(provider.device_polls) >= 1),
                           provider.expire_device_codes()))
    with pytest.raises(OAuthError) as server_side:
        client_for(provider).login_device(store, "dev", on_code=lambda g: None)
    assert server_side.value.error == "expired_token"
    assert [p.answer for p in provider.device_polls] == ["authorization_pending", "expired_token"]
    # Rule 7: a code that expires before the next poll ends the login without polling again.
    provider.device_expires_in = 1.8
    polls_before = len(provider.device_polls)
    with pytest.raises(OAuthError, match="expired") as local:
        client_for(provider).login_device(store, "dev", on_code=lambda g: None)
    assert local.value.error == "expired_token"
    assert len(provider.device_polls) - polls_before == 1  # at +1 s; the next, +2 s, is too late
    assert store.get("dev") is None


def test_network_error_mid_polling_never_polls_sooner(provider: MockProvider, store: FileStore) -> None:
    provider.fail_next_token_requests(1, 503)
    provider.token_delay = 1.5  # the first poll hangs past the client's timeout

    def person() -> None:
        wait_until(lambda: len(provider.device_polls) >= 1)
        provider.token_delay = 0
        provider.approve_device(provider.user_codes[-1])

    in_background(person)
    tokens = client_for(provider, timeout=0.5).login_device(store, "dev", on_code=lambda g: None)
    assert [p.answer for p in provider.device_polls] == ["HTTP 503", "tokens"]
    _, after_failure = poll_gaps(provider)
    assert after_failure >= 2.0  # rule 6: the interval doubled, not a quick retry
    assert store.get("dev") == tokens


def test_provider_gone_is_a_typed_error(provider: MockProvider, store: FileStore) -> None:
    client = client_for(provider)
    client.device_authorization_endpoint
    provider.stop()
    with pytest.raises((TokenEndpointError, DiscoveryError)):
        client.login_device(store, "dev", on_code=lambda g: None)
    assert store.get("dev") is None


def test_cancel_event_stops_polling_promptly(provider: MockProvider, store: FileStore) -> None:
    provider.device_interval = 30
    cancel = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallbackCancelled):
        client_for(provider).login_device(store, "dev", on_code=lambda g: cancel.set(), cancel=cancel)
    assert time.monotonic() - started < 20
    assert provider.device_polls == [] and store.get("dev") is None


def test_no_device_endpoint_is_one_clear_error(provider: MockProvider, store: FileStore) -> None:
    provider.device_flow = False
    with pytest.raises(DiscoveryError) as info:
        client_for(provider).login_device(store, "dev")
    assert provider.issuer in str(info.value) and "--no-browser" in str(info.value)
    with pytest.raises(ValueError, match="issuer or a device_authorization_endpoint"):
        OAuthClient("c", token_endpoint="http://127.0.0.1:1/token").login_device(store, "dev")


def test_explicit_endpoint_confidential_client_resource(provider: MockProvider, store: FileStore) -> None:
    client_id, secret = provider.register_client(confidential=True)
    client = OAuthClient(
        client_id, client_secret=secret, token_endpoint=provider.token_endpoint,
        device_authorization_endpoint=provider.device_authorization_endpoint,
        resource="https://api.example",
    )
    tokens = client.login_device(store, "dev", on_code=lambda g: provider.approve_device(g.user_code))
    assert provider.is_access_token_active(tokens.access_token)
    # client_secret_basic: the secret is in no form, the resource in both requests.
    assert provider.device_authorization_requests == [{"resource": "https://api.example"}]
    (poll,) = [r for r in provider.token_requests if r.get("grant_type") == DEVICE_CODE_GRANT]
    assert "client_secret" not in poll and poll["resource"] == "https://api.example"
    assert provider.stats["device_authorizations"] == 1
    assert store.get_client("dev") is not None


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_pending_then_approval(provider: MockProvider, store: FileStore, backend: str) -> None:
    def person() -> None:
        wait_until(lambda: len(provider.device_polls) >= 1)
        provider.approve_device(provider.user_codes[-1])

    in_background(person)

    async def main() -> None:
        tokens = await client_for(provider).login_device_async(store, "dev", on_code=lambda g: None)
        assert store.get("dev") == tokens

    anyio.run(main, backend=backend)
    assert [p.answer for p in provider.device_polls] == ["authorization_pending", "tokens"]
    assert all(gap >= 1.0 for gap in poll_gaps(provider))
    assert provider.stats["device_polls_too_fast"] == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_cancellation_stores_nothing(provider: MockProvider, store: FileStore, backend: str) -> None:
    provider.device_interval = 30

    async def main() -> None:
        with anyio.move_on_after(1.0) as scope:
            await client_for(provider).login_device_async(store, "dev", on_code=lambda g: None)
        assert scope.cancelled_caught

    anyio.run(main, backend=backend)
    assert provider.device_polls == [] and store.get("dev") is None


def test_identity_saved_and_another_account_refused_like_a_browser_login(
    provider: MockProvider, store: FileStore
) -> None:
    pytest.importorskip("joserfc", reason="ID Tokens are validated with joserfc (the jwt extra)")
    from oauth_callback.errors import AccountMismatchError

    provider.add_user("bob-sub", email="bob@example.com")
    client = OAuthClient(provider.client_id, issuer=provider.issuer, scope="openid email")
    approve = lambda g: provider.approve_device(g.user_code)  # noqa: E731
    client.login_device(store, "acct", on_code=approve)
    info = store.get_client("acct")
    assert info is not None and info.identity is not None
    assert info.identity.sub == provider.subject  # from the ID Token or userinfo
    before = store.get("acct")
    provider.approving_user = "bob-sub"
    with pytest.raises(AccountMismatchError):
        client.login_device(store, "acct", on_code=approve)
    assert store.get("acct") == before
    client.login_device(store, "acct", on_code=approve, replace_account=True)
    assert store.get_client("acct").identity.sub == "bob-sub"  # type: ignore[union-attr]
