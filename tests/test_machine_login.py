"""Machine-to-machine logins: OAuthClient.client_credentials (+ async), TokenManager renewing
them once across processes, the auth-method choice from metadata, and the CLI
(`login --client-credentials`, `token KEY` after expiry), against the MockProvider."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import anyio
import pytest

from oauth_callback import (
    FileStore,
    InvalidClientError,
    MemoryStore,
    MissingCredentialsError,
    OAuthClient,
    ReauthRequired,
    TokenManager,
)
from oauth_callback.storage.key_sources import encode_key, generate_key
from oauth_callback.testing import MockProvider

from .conftest import ROOT
from .test_http_auth import run_at_once

jose_jwk = pytest.importorskip("joserfc.jwk", reason="joserfc is a test dependency (CI installs it)")

KEY = "svc"
SECRET_VAR = "OAUTH_CALLBACK_CLIENT_SECRET"


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


def secret_forms(client_id: str, secret: str) -> list[str]:
    """A secret in every encoding it could leak in."""
    return [secret, quote(secret, safe=""), quote_plus(secret, safe=""),
            base64.b64encode(secret.encode()).decode().rstrip("="),
            base64.b64encode(f"{client_id}:{secret}".encode()).decode().rstrip("=")]


def expire(store: FileStore | MemoryStore, provider: MockProvider) -> str:
    provider.expire_access_tokens()
    tokens = store.update(KEY, lambda t: t.replace(expires_at=time.time() - 5) if t else t)
    assert tokens is not None
    return tokens.access_token


def key_pair(kind: str) -> tuple[str, str]:
    key = jose_jwk.ECKey.generate_key("P-256") if kind == "EC" else jose_jwk.RSAKey.generate_key(2048)
    return key.as_pem(private=True).decode(), key.as_pem(private=False).decode()


# --------------------------------------------------------------------------- the library


@pytest.mark.parametrize("method", [None, "client_secret_basic", "client_secret_post"])
def test_client_credentials_with_a_secret(provider: MockProvider, method: str | None) -> None:
    client_id, secret = provider.register_machine_client(scope="read write")
    client = OAuthClient.discover(provider.issuer, client_id, client_secret=secret,
                                  token_endpoint_auth_method=method)
    assert client.token_endpoint_auth_method == (method or "client_secret_basic")
    tokens = client.client_credentials(scope="read")
    assert tokens.scope == "read" and tokens.refresh_token is None
    assert provider.access_token_info(tokens.access_token)["client_id"] == client_id
    assert ("client_secret" in provider.token_requests[-1]) is (method == "client_secret_post")
    assert all(form not in repr(client) for form in secret_forms(client_id, secret or ""))


@pytest.mark.parametrize(("kind", "algorithm"), [("EC", "ES256"), ("RSA", "RS256")])
def test_client_credentials_with_private_key_jwt(provider: MockProvider, kind: str,
                                                 algorithm: str) -> None:
    private_pem, public_pem = key_pair(kind)
    client_id, _ = provider.register_machine_client(public_key=public_pem)
    client = OAuthClient.discover(provider.issuer, client_id, private_key=private_pem,
                                  signing_algorithm=algorithm, key_id="k1")
    assert client.token_endpoint_auth_method == "private_key_jwt"
    provider.fail_next_token_requests(1, 503)  # the retry signs a new assertion (new jti)
    tokens = client.client_credentials(max_retries=1, backoff=0.01)
    assert provider.access_token_info(tokens.access_token)["client_id"] == client_id
    first, second = (r["client_assertion"] for r in provider.token_requests[-2:])
    assert first != second and provider.assertion_failures == []
    assert "PRIVATE" not in repr(client) and private_pem.splitlines()[1] not in repr(client)


def test_private_key_jwt_authenticates_revocation_too(provider: MockProvider) -> None:
    private_pem, public_pem = key_pair("EC")
    client_id, _ = provider.register_machine_client(public_key=public_pem)
    client = OAuthClient.discover(provider.issuer, client_id, private_key=private_pem)
    token = client.client_credentials().access_token
    client.revoke(token, token_type_hint="access_token")
    assert not provider.is_access_token_active(token)
    assert provider.assertion_failures == []


def test_async_client_credentials(provider: MockProvider) -> None:
    client_id, secret = provider.register_machine_client()

    async def main() -> str:
        client = await OAuthClient.discover_async(provider.issuer, client_id,
                                                  client_secret=secret)
        store = MemoryStore()
        tokens = await client.client_credentials_async(store=store, key=KEY)
        assert store.get(KEY) == tokens and store.get_client(KEY).is_client_credentials
        return tokens.access_token

    assert provider.is_access_token_active(anyio.run(main))


def test_the_method_follows_the_metadata() -> None:
    with MockProvider(auth_methods=["client_secret_post"]) as post_only:
        client_id, secret = post_only.register_machine_client()
        client = OAuthClient(client_id, client_secret=secret, issuer=post_only.issuer)
        assert client.token_endpoint_auth_method == "client_secret_basic"  # nothing known yet
        client.client_credentials()
        assert client.token_endpoint_auth_method == "client_secret_post"
        assert "client_secret" in post_only.token_requests[-1]
    with MockProvider(auth_methods=["client_secret_basic"]) as basic_only:
        client_id, secret = basic_only.register_machine_client()
        assert OAuthClient.discover(basic_only.issuer, client_id, client_secret=secret
                                    ).client_credentials().access_token
        forced = OAuthClient.discover(basic_only.issuer, client_id, client_secret=secret,
                                      token_endpoint_auth_method="client_secret_post")
        with pytest.raises(InvalidClientError) as info:
            forced.client_credentials()
        assert all(form not in str(info.value) for form in secret_forms(client_id, secret))


def test_a_public_client_cannot_use_the_grant(provider: MockProvider) -> None:
    with pytest.raises(ValueError, match="authenticated client"):
        OAuthClient.discover(provider.issuer, "test-client").client_credentials()


def test_the_manager_renews_a_machine_login_and_keeps_no_secret(
    provider: MockProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, secret = provider.register_machine_client()
    assert secret is not None
    store = FileStore(tmp_path / "tokens.json")
    client = OAuthClient.discover(provider.issuer, client_id, client_secret=secret)
    first = client.client_credentials(store=store, key=KEY, secret_env="OC_TEST_SECRET")
    raw = (tmp_path / "tokens.json").read_text()
    assert all(form not in raw for form in secret_forms(client_id, secret))
    manager = TokenManager(store, KEY)  # rebuilds the client from the store
    assert manager.access_token() == first.access_token
    old = expire(store, provider)
    with pytest.raises(MissingCredentialsError) as info:
        manager.access_token()
    assert "OC_TEST_SECRET" in str(info.value) and store.get(KEY).access_token == old
    monkeypatch.setenv("OC_TEST_SECRET", secret)
    renewed = manager.access_token()
    assert renewed != old and provider.is_access_token_active(renewed)
    assert provider.client_credentials_count == 2
    # A 401 forces one renewal too (no refresh token involved).
    forced = manager.force_refresh(renewed)
    assert forced.access_token != renewed and provider.client_credentials_count == 3
    # An explicit client renews the same way; a rejected client is a typed error.
    monkeypatch.setenv("OC_TEST_SECRET", "wrong-" + secret)
    expire(store, provider)
    with pytest.raises(InvalidClientError):
        TokenManager(store, KEY).access_token()
    assert TokenManager(store, KEY, client=client).access_token() != forced.access_token


def test_a_login_without_the_marker_is_not_renewed(provider: MockProvider) -> None:
    client_id, secret = provider.register_machine_client()
    store = MemoryStore()
    client = OAuthClient.discover(provider.issuer, client_id, client_secret=secret)
    store.set(KEY, client.client_credentials())  # saved by hand: no client registration
    expire(store, provider)
    with pytest.raises(ReauthRequired):
        TokenManager(store, KEY, client=client).access_token()


RENEW_CHILD = r"""
import sys, time
from pathlib import Path
from oauth_callback import FileStore, TokenManager
path, key, barrier, n = sys.argv[1:5]
manager = TokenManager(FileStore(path), key)
Path(barrier, "ready-" + n).touch()
while not Path(barrier, "go").exists():
    time.sleep(0.002)
print(manager.access_token())
"""


def test_eight_processes_renew_an_expired_machine_token_once(
    provider: MockProvider, tmp_path: Path
) -> None:
    private_pem, public_pem = key_pair("EC")
    client_id, _ = provider.register_machine_client(public_key=public_pem)
    key_file = tmp_path / "client.pem"
    key_file.write_text(private_pem)
    path = tmp_path / "store" / "tokens.json"
    store = FileStore(path)
    from oauth_callback.assertion import PrivateKeyJWT

    client = OAuthClient.discover(provider.issuer, client_id,
                                  private_key=PrivateKeyJWT.from_pem_file(key_file))
    client.client_credentials(store=store, key=KEY)
    assert private_pem.splitlines()[1] not in path.read_text()
    old = expire(store, provider)
    provider.token_delay = 0.3
    tokens = set(run_at_once(RENEW_CHILD, [str(path), KEY], tmp_path / "barrier"))
    assert len(tokens) == 1 and old not in tokens
    assert provider.client_credentials_count == 2  # the login and one renewal
    assert provider.assertion_failures == []


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["OAUTH_CALLBACK_STORE"] = str(tmp_path / "store" / "tokens.json")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", SECRET_VAR):
        e.pop(name, None)
    return e


def cli(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oauth_callback", *args], capture_output=True,
                          stdin=subprocess.DEVNULL, text=True, env={**env, **extra_env},
                          timeout=60)


def test_cli_login_with_a_secret_then_token_after_expiry(
    provider: MockProvider, env: dict[str, str], tmp_path: Path
) -> None:
    client_id, secret = provider.register_machine_client(scope="read write")
    assert secret is not None
    login = cli(env, "login", "--client-credentials", "--issuer", provider.issuer,
                "--client-id", client_id, "--scope", "read", "--key", KEY,
                **{SECRET_VAR: secret})
    assert login.returncode == 0, login.stderr
    assert "client credentials" in login.stdout and "client_secret_basic" in login.stdout
    store_file = tmp_path / "store" / "tokens.json"
    for form in secret_forms(client_id, secret):
        assert form not in login.stdout + login.stderr and form not in store_file.read_text()
    first = cli(env, "token", KEY)  # valid: no secret needed
    assert first.returncode == 0 and provider.is_access_token_active(first.stdout.strip())
    expire(FileStore(store_file), provider)
    status = cli(env, "status", KEY)  # expired, no refresh token, yet usable: asked again
    assert status.returncode == 0 and "refreshed on next use" in status.stdout, status.stdout
    missing = cli(env, "token", KEY)
    assert missing.returncode == 2 and SECRET_VAR in missing.stderr
    assert "Traceback" not in missing.stderr
    renewed = cli(env, "token", KEY, **{SECRET_VAR: secret})
    assert renewed.returncode == 0, renewed.stderr
    assert renewed.stdout.strip() != first.stdout.strip()
    assert provider.access_token_info(renewed.stdout.strip())["scope"] == "read"
    wrong = cli(env, "token", KEY, **{SECRET_VAR: secret + "x"})
    assert wrong.returncode == 0  # still valid: nothing to renew
    expire(FileStore(store_file), provider)
    wrong = cli(env, "token", KEY, **{SECRET_VAR: secret + "x"})
    assert wrong.returncode == 5 and "invalid_client" in wrong.stderr
    for form in secret_forms(client_id, secret) + secret_forms(client_id, secret + "x"):
        assert form not in wrong.stdout + wrong.stderr


def test_cli_login_with_a_private_key_file(provider: MockProvider, env: dict[str, str],
                                           tmp_path: Path) -> None:
    private_pem, public_pem = key_pair("RSA")
    client_id, _ = provider.register_machine_client(public_key=public_pem)
    key_file = tmp_path / "client.pem"
    key_file.write_text(private_pem)
    login = cli(env, "login", "--client-credentials", "--issuer", provider.issuer,
                "--client-id", client_id, "--private-key", str(key_file),
                "--signing-alg", "RS256", "--key-id", "k1", "--key", KEY)
    assert login.returncode == 0, login.stderr
    assert "private_key_jwt" in login.stdout and str(key_file) in login.stdout
    store_file = tmp_path / "store" / "tokens.json"
    assert private_pem.splitlines()[1] not in store_file.read_text()
    expire(FileStore(store_file), provider)
    renewed = cli(env, "token", KEY)
    assert renewed.returncode == 0, renewed.stderr
    assert provider.client_credentials_count == 2
    key_file.unlink()
    expire(FileStore(store_file), provider)
    gone = cli(env, "token", KEY)
    assert gone.returncode == 2 and str(key_file) in gone.stderr


def test_cli_machine_login_usage_errors(provider: MockProvider, env: dict[str, str],
                                        tmp_path: Path) -> None:
    client_id, secret = provider.register_machine_client()
    assert secret is not None
    base = ["login", "--client-credentials", "--client-id", client_id]
    no_secret = cli(env, *base, "--issuer", provider.issuer)
    assert no_secret.returncode == 2 and SECRET_VAR in no_secret.stderr
    no_server = cli(env, *base, **{SECRET_VAR: secret})
    assert no_server.returncode == 2 and "--issuer or --token-url" in no_server.stderr
    plain = cli(env, *base, "--issuer", provider.issuer, "--store-secret", **{SECRET_VAR: secret})
    assert plain.returncode == 2 and "encrypted store" in plain.stderr
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    bad = cli(env, *base, "--issuer", provider.issuer, "--private-key", str(bad_key))
    assert bad.returncode == 2 and "--private-key" in bad.stderr
    wrong = cli(env, *base, "--issuer", provider.issuer, **{SECRET_VAR: "nope-" + secret})
    assert wrong.returncode == 5 and "invalid_client" in wrong.stderr
    assert all(f not in wrong.stderr for f in secret_forms(client_id, "nope-" + secret))


def test_cli_store_secret_in_an_encrypted_store(provider: MockProvider, env: dict[str, str],
                                                tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    client_id, secret = provider.register_machine_client()
    assert secret is not None
    store_file = tmp_path / "enc" / "tokens.json"
    url = f"file:{store_file}?encryption=env:OC_TEST_STORE_KEY"
    store_key = encode_key(generate_key())
    login = cli(env, "login", "--client-credentials", "--issuer", provider.issuer,
                "--client-id", client_id, "--key", KEY, "--store", url, "--store-secret",
                OC_TEST_STORE_KEY=store_key, **{SECRET_VAR: secret})
    assert login.returncode == 0, login.stderr
    assert "stored (encrypted)" in login.stdout
    assert all(form not in store_file.read_text() for form in secret_forms(client_id, secret))
    from oauth_callback.storage.url import open_store

    os.environ["OC_TEST_STORE_KEY"] = store_key
    try:
        store = open_store(url)
        assert store.get_client(KEY).client_secret == secret
        expire(store, provider)
    finally:
        del os.environ["OC_TEST_STORE_KEY"]
    renewed = cli(env, "token", KEY, "--store", url, OC_TEST_STORE_KEY=store_key)
    assert renewed.returncode == 0, renewed.stderr  # no secret variable needed
    assert provider.client_credentials_count == 2


def test_the_cli_auth_method_choices_are_the_protocol_ones() -> None:
    from oauth_callback.cli._main import AUTH_METHOD_CHOICES
    from oauth_callback.protocol import AUTH_METHODS

    assert AUTH_METHOD_CHOICES == AUTH_METHODS


def test_no_secret_reaches_a_log_line(provider: MockProvider, caplog: pytest.LogCaptureFixture,
                                      tmp_path: Path) -> None:
    import logging

    import httpx2

    from .resource_server import ResourceServer

    caplog.set_level(logging.DEBUG)
    client_id, secret = provider.register_machine_client()
    assert secret is not None
    private_pem, public_pem = key_pair("EC")
    jwt_id, _ = provider.register_machine_client(public_key=public_pem)
    store = MemoryStore()
    sent: list[str] = [secret, private_pem.splitlines()[1]]
    for method in ("client_secret_basic", "client_secret_post"):
        client = OAuthClient.discover(provider.issuer, client_id, client_secret=secret,
                                      token_endpoint_auth_method=method)
        sent.append(client.client_credentials(store=store, key=KEY).access_token)
    jwt_client = OAuthClient.discover(provider.issuer, jwt_id, private_key=private_pem)
    sent.append(jwt_client.client_credentials().access_token)
    sent += [r["client_assertion"] for r in provider.token_requests if "client_assertion" in r]
    with ResourceServer(provider, current_only=True) as api:
        manager = TokenManager(store, KEY, client=OAuthClient.discover(
            provider.issuer, client_id, client_secret=secret))
        provider.revoke_access_token(store.get(KEY).access_token)
        with httpx2.Client(auth=manager.httpx_auth()) as http:
            assert http.get(api.url + "/api").status_code == 200
        sent.append(store.get(KEY).access_token)
    assert caplog.records  # something was logged at DEBUG
    for value in sent:
        for form in secret_forms(client_id, value):
            assert form not in caplog.text
