"""OAuthClient.revoke / TokenManager.logout (and their async twins) against a real MockProvider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from oauth_callback import FileStore, OAuthError, ReauthRequired, TokenManager
from oauth_callback.errors import DiscoveryError, TokenEndpointError
from oauth_callback.flow import OAuthClient
from oauth_callback.testing import MockProvider

from .test_flow import Browser

KEY = "acct"


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        p.add_user("test-user", email="alice@example.com")
        yield p


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "tokens.json", durable=False)


def _login(provider: MockProvider, store: FileStore, scope: str = "openid email") -> None:
    client = OAuthClient.discover(provider.issuer, provider.client_id, scope=scope)
    browser = Browser()
    client.login(store, KEY, open_browser=browser, timeout=20)
    browser.join()


def test_revoke_a_refresh_token(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)
    tokens = store.get(KEY)
    assert tokens is not None and tokens.refresh_token
    client = OAuthClient.from_client_info(store.get_client(KEY))  # type: ignore[arg-type]
    client.revoke(tokens.refresh_token, token_type_hint="refresh_token")
    assert not provider.is_refresh_token_active(tokens.refresh_token)
    assert provider.revocations == 1
    with pytest.raises(OAuthError, match="invalid_grant"):
        client.refresh(tokens.refresh_token)


def test_revoke_async(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)
    tokens = store.get(KEY)
    assert tokens is not None

    async def main() -> None:
        client = await OAuthClient.discover_async(provider.issuer, provider.client_id)
        await client.revoke_async(tokens.access_token)

    anyio.run(main)
    assert not provider.is_access_token_active(tokens.access_token)


def test_logout_revokes_then_removes_locally(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)
    tokens = store.get(KEY)
    assert tokens is not None and tokens.refresh_token
    result = TokenManager(store, KEY).logout()
    assert result.ok and result.revoked == ("refresh_token", "access_token")
    assert result.revocation_supported is True and result.had_tokens
    assert provider.revocation_requests == 2
    assert not provider.is_refresh_token_active(tokens.refresh_token)
    assert not provider.is_access_token_active(tokens.access_token)
    assert store.get(KEY) is None and store.get_session(KEY) is None
    info = store.get_client(KEY)
    assert info is not None and info.identity is None  # kept, without the account
    assert info.client_id == provider.client_id
    with pytest.raises(ReauthRequired):
        TokenManager(store, KEY).tokens()


def test_logout_forget_client(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)
    result = TokenManager(store, KEY).logout(forget_client=True)
    assert result.ok and store.get_client(KEY) is None and store.get(KEY) is None


def test_logout_without_revoking(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)
    tokens = store.get(KEY)
    assert tokens is not None and tokens.refresh_token
    result = TokenManager(store, KEY).logout(revoke=False)
    assert result.ok and result.revoked == () and result.revocation_supported is None
    assert provider.revocation_requests == 0
    assert provider.is_refresh_token_active(tokens.refresh_token)
    assert store.get(KEY) is None


def test_logout_when_the_provider_is_down_still_removes_locally(
    provider: MockProvider, store: FileStore
) -> None:
    _login(provider, store)
    provider.stop()
    result = TokenManager(store, KEY).logout()
    assert not result.ok and result.revoked == ()
    assert isinstance(result.revocation_error, TokenEndpointError)
    assert str(result.revocation_error).startswith(
        f"could not reach the revocation endpoint {provider.revocation_endpoint}: ConnectError")
    assert store.get(KEY) is None


def test_logout_when_revocation_answers_503(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)
    provider.fail_next_revocations(5)
    result = TokenManager(store, KEY).logout()
    assert isinstance(result.revocation_error, TokenEndpointError)
    assert str(result.revocation_error) == (
        "revocation endpoint answered HTTP 503 (temporarily_unavailable)")
    assert store.get(KEY) is None


def test_logout_of_a_provider_without_revocation(
    provider: MockProvider, store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider, "_account_metadata", lambda: {"jwks_uri": provider.jwks_uri})
    _login(provider, store)
    result = TokenManager(store, KEY).logout()
    assert result.ok and result.revocation_supported is False and result.revoked == ()
    assert store.get(KEY) is None
    with pytest.raises(DiscoveryError, match=r"advertises no revocation_endpoint \(RFC 7009\)"):
        OAuthClient.discover(provider.issuer, provider.client_id).revoke("x")


def test_logout_of_nothing(store: FileStore) -> None:
    result = TokenManager(store, KEY).logout()
    assert result.ok and not result.had_tokens and not result.had_client


def test_logout_async(provider: MockProvider, store: FileStore) -> None:
    _login(provider, store)

    async def main() -> None:
        result = await TokenManager(store, KEY).logout_async()
        assert result.ok and result.revoked == ("refresh_token", "access_token")

    anyio.run(main)
    assert store.get(KEY) is None


def test_a_new_login_after_logout_may_be_another_account(
    provider: MockProvider, store: FileStore
) -> None:
    _login(provider, store)
    TokenManager(store, KEY).logout()
    provider.add_user("bob", email="bob@example.com")
    provider.approving_user = "bob"
    _login(provider, store)
    assert store.get_client(KEY).identity.email == "bob@example.com"  # type: ignore[union-attr]
