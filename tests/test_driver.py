"""Flows as generators of effects, their two drivers, and the twins no other test calls.

A flow is driven here by hand (every effect is a frozen value) to pin the
order of its effects and its clean-up on failure; then both drivers run the
same flows against the real MockProvider over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from oauth_callback import (
    CallbackTimeout,
    ClientInfo,
    MemoryStore,
    OAuthClient,
    TokenEndpointError,
    TokenManager,
    Tokens,
)
from oauth_callback.browser import open_url_async
from oauth_callback.driver import metadata_flow, run, run_async
from oauth_callback.effects import (
    CloseCallback,
    DeleteSession,
    HttpGet,
    OpenURL,
    SaveLogin,
    SaveSession,
    StartCallback,
    WaitCallback,
)
from oauth_callback.loopback import LoopbackOptions
from oauth_callback.protocol import CallbackResult, RawResponse, TokenRequest
from oauth_callback.testing import MockProvider

KEY = "k"
REDIRECT = "http://127.0.0.1:5555/callback"


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


def _client() -> OAuthClient:
    return OAuthClient("cid", authorization_endpoint="https://as.example/authorize",
                       token_endpoint="https://as.example/token")


def _token_answer() -> RawResponse:
    body = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600,
            "refresh_token": "rt-1"}
    return RawResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())


def _login_flow(client: OAuthClient, store: MemoryStore):  # type: ignore[no-untyped-def]
    return client._login_flow(store, KEY, LoopbackOptions(), False, 5.0, None)


# --------------------------------------------------------------------------- by hand


def test_login_flow_yields_its_effects_in_order() -> None:
    store = MemoryStore()
    flow = _login_flow(_client(), store)
    start = next(flow)
    assert isinstance(start, StartCallback) and start.expected_state
    save = flow.send(REDIRECT)
    assert isinstance(save, SaveSession) and save.key == KEY
    assert save.session.state == start.expected_state
    assert save.session.extra["redirectUri"] == REDIRECT
    shown = flow.send(None)
    assert isinstance(shown, OpenURL) and "redirect_uri=" in shown.url
    wait = flow.send(None)
    assert isinstance(wait, WaitCallback) and wait.expected_state == start.expected_state
    result = CallbackResult.from_params({"code": "c-1", "state": start.expected_state})
    assert isinstance(flow.send(result), CloseCallback)
    post = flow.send(None)
    assert isinstance(post, TokenRequest) and post.grant_type == "authorization_code"
    assert post.form["code_verifier"] == save.session.code_verifier
    saved = flow.send(_token_answer())
    assert isinstance(saved, SaveLogin) and saved.tokens.access_token == "at-1"
    assert saved.client is not None and saved.client.redirect_uri == REDIRECT
    assert isinstance(flow.send(None), DeleteSession)
    with pytest.raises(StopIteration) as stop:
        flow.send(None)
    assert stop.value.value.access_token == "at-1"
    # The flow only asked: nothing was written by driving it by hand.
    assert store.get(KEY) is None and store.get_session(KEY) is None


def test_login_flow_cleans_up_when_the_wait_fails() -> None:
    flow = _login_flow(_client(), MemoryStore())
    next(flow)
    flow.send(REDIRECT)  # -> SaveSession
    flow.send(None)  # -> OpenURL
    flow.send(None)  # -> WaitCallback
    cleanup = flow.throw(CallbackTimeout("no callback"))
    assert isinstance(cleanup, DeleteSession) and cleanup.key == KEY
    with pytest.raises(CallbackTimeout):
        flow.send(None)


def test_a_flow_discovers_first_when_only_an_issuer_is_known() -> None:
    flow = OAuthClient("cid", issuer="https://as.example")._exchange_flow("c", REDIRECT, "v")
    get = next(flow)
    assert isinstance(get, HttpGet)
    assert get.url == "https://as.example/.well-known/oauth-authorization-server"


def test_effect_reprs_hide_secrets() -> None:
    store = MemoryStore()
    flow = _login_flow(_client(), store)
    state = next(flow).expected_state
    save = flow.send(REDIRECT)
    shown = flow.send(None)
    text = repr(save) + repr(shown) + repr(flow.send(None))
    assert state not in text and save.session.code_verifier not in text


def test_the_sync_driver_retries_a_refresh_and_merges_the_refresh_token() -> None:
    # A flow fed by a fake transport: a 503 then a success without refresh_token.
    answers = [httpx2.Response(503), httpx2.Response(200, json={"access_token": "at-2"})]
    sent: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.content)
        return answers.pop(0)

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
        client = OAuthClient("cid", token_endpoint="https://as.example/token", http_client=http)
        tokens = client.refresh("rt-old", max_retries=1, backoff=0.0)
    assert tokens.access_token == "at-2" and tokens.refresh_token == "rt-old"
    assert len(sent) == 2 and all(b"refresh_token=rt-old" in body for body in sent)


def test_the_drivers_report_network_failures_as_token_endpoint_errors() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused")

    client = OAuthClient("cid", token_endpoint="https://as.example/token")
    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http, \
            pytest.raises(TokenEndpointError, match="could not reach the token endpoint"):
        run(client._refresh_flow("rt", None, None, 0, 0.0), http=http)

    async def main() -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            await run_async(client._refresh_flow("rt", None, None, 0, 0.0), http=http)

    with pytest.raises(TokenEndpointError, match="could not reach the token endpoint"):
        asyncio.run(main())


def _self_signed_ca(path: Path, name: str) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_short_lived_clients_share_one_ssl_context_per_ca_setting(
    provider: MockProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A client opened per flow (a TokenManager without http_client refreshing) must
    # not load the CA certificates again each time; SSL_CERT_FILE still selects them.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    used: list[object] = []
    real_client, real_async = httpx2.Client, httpx2.AsyncClient

    class Client(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: object) -> None:
            used.append(kwargs.get("verify"))
            super().__init__(**kwargs)

    class AsyncClient(real_async):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: object) -> None:
            used.append(kwargs.get("verify"))
            super().__init__(**kwargs)

    monkeypatch.setattr(httpx2, "Client", Client)
    monkeypatch.setattr(httpx2, "AsyncClient", AsyncClient)
    for _ in range(2):
        assert run(metadata_flow(provider.issuer)).issuer == provider.issuer
        assert asyncio.run(run_async(metadata_flow(provider.issuer))).issuer == provider.issuer
    assert len(used) == 4 and isinstance(used[0], ssl.SSLContext)
    assert all(context is used[0] for context in used)
    ca = tmp_path / "ca.pem"
    _self_signed_ca(ca, "oauth-callback test CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    run(metadata_flow(provider.issuer))
    assert used[-1] is not used[0] and isinstance(used[-1], ssl.SSLContext)
    names = [dict(pair[0] for pair in c["subject"]).get("commonName")
             for c in used[-1].get_ca_certs()]
    assert names == ["oauth-callback test CA"]


# --------------------------------------------------------------------------- async driver


@pytest.mark.asyncio
async def test_cancelling_login_async_still_deletes_the_session(provider: MockProvider) -> None:
    store = MemoryStore()
    client = await OAuthClient.discover_async(provider.issuer, "test-client")
    task = asyncio.create_task(client.login_async(store, KEY, open_browser=lambda url: None,
                                                  timeout=60))
    for _ in range(1000):  # wait (bounded) until the login waits for the callback
        if store.get_session(KEY) is not None:
            break
        await asyncio.sleep(0.01)
    assert store.get_session(KEY) is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get_session(KEY) is None and store.get(KEY) is None


# --------------------------------------------------------------------------- untested twins


@pytest.mark.asyncio
async def test_register_async(provider: MockProvider) -> None:
    client = await OAuthClient.register_async(
        provider.issuer, client_name="cli", redirect_uris=["http://localhost/callback"]
    )
    assert client.client_id.startswith("dcr_") and client.client_secret is None
    assert client.token_endpoint == provider.token_endpoint
    assert provider.registrations == 1


def _browse(url: str) -> None:
    def go() -> None:
        with httpx2.Client(follow_redirects=True, timeout=10) as http:
            http.get(url)

    threading.Thread(target=go, daemon=True).start()


@pytest.mark.asyncio
async def test_force_refresh_async(provider: MockProvider) -> None:
    store = MemoryStore()
    client = OAuthClient.discover(provider.issuer, "test-client")
    first = client.login(store, KEY, open_browser=_browse, timeout=10)
    manager = TokenManager(store, KEY)
    renewed = await manager.force_refresh_async(first.access_token)
    assert renewed.access_token != first.access_token
    assert provider.refresh_count == 1
    # A second call for the same rejected token uses the new one: no second refresh.
    again = await manager.force_refresh_async(first.access_token)
    assert again == renewed and provider.refresh_count == 1


@pytest.mark.asyncio
async def test_update_client_async() -> None:
    store = MemoryStore()
    store.set_client(KEY, ClientInfo("cid"))
    updated = await store.update_client_async(
        KEY, lambda c: None if c is None else c.replace(scope="read")
    )
    assert updated == ClientInfo("cid", scope="read") == store.get_client(KEY)
    assert await store.update_client_async(KEY, lambda c: None) is None
    assert store.get_client(KEY) is None


@pytest.mark.asyncio
async def test_open_url_async_runs_blocking_openers_off_the_loop(monkeypatch, capsys) -> None:
    loop_thread = threading.get_ident()
    seen: list[tuple[str, int]] = []

    def plain(url: str) -> None:
        seen.append(("plain", threading.get_ident()))

    async def coroutine(url: str) -> None:
        seen.append(("async", threading.get_ident()))

    def browser(url: str) -> bool:
        seen.append(("browser", threading.get_ident()))
        return True

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(webbrowser, "open", browser)
    await open_url_async("https://as.example/a", plain)
    await open_url_async("https://as.example/a", coroutine)
    await open_url_async("https://as.example/a", True)
    await open_url_async("https://as.example/a", False)
    assert [kind for kind, _ in seen] == ["plain", "async", "browser"]
    threads = dict(seen)
    assert threads["async"] == loop_thread
    assert threads["plain"] != loop_thread and threads["browser"] != loop_thread
    assert "Open this URL in your browser: https://as.example/a" in capsys.readouterr().err


def test_tokens_from_a_flow_keep_their_type() -> None:
    # The drivers return the flow's value unchanged.
    def flow():  # type: ignore[no-untyped-def]
        answer = yield HttpGet("https://as.example/x")
        return Tokens("at", expires_at=time.time() + 60) if answer.status == 200 else None

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={})

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
        assert isinstance(run(flow(), http=http), Tokens)


def test_a_registration_network_failure_is_a_registration_error() -> None:
    from oauth_callback.errors import EndpointError, RegistrationError
    from oauth_callback.protocol import ServerMetadata

    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused")

    metadata = ServerMetadata("https://as.example", "https://as.example/authorize",
                              "https://as.example/token",
                              registration_endpoint="https://as.example/register")
    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http, \
            pytest.raises(RegistrationError, match="registration endpoint") as info:
        OAuthClient.register(metadata, client_name="c", redirect_uris=[REDIRECT],
                             http_client=http)
    assert isinstance(info.value, EndpointError)
    assert not isinstance(info.value, TokenEndpointError)
