"""How ``browser_auth`` checks a stored client registration, counted at a real server.

The authorization server is the real :class:`~oauth_callback.testing.MockProvider`
(dynamic registration, RFC 7592's client configuration endpoint unless
``client_configuration=False``, ``forget_client`` for a stale registration); the
protected API is ``tests/resource_server.py`` (RFC 9728 metadata naming the
provider); the loopback callback server is real and the "browser" follows the
redirects headlessly. Issue 15 item 4: no needless authorization requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+ (httpx2); CI installs it")

import httpx2

from oauth_callback import ClientInfo, FileStore, OAuthError
from oauth_callback.mcp import browser_auth, default_key
from oauth_callback.mcp.storage import _Configuration
from oauth_callback.testing import MockProvider, follow_redirects

from .resource_server import ResourceServer

pytestmark = pytest.mark.timeout(90)


class Browser:
    """A headless browser that records every URL it is asked to open."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, url: str) -> None:
        self.opened.append(url)
        follow_redirects(url)


def login(url: str, store: FileStore, browser: Browser, **kwargs: Any) -> httpx2.Response:
    """One request to the protected ``url`` through ``browser_auth`` (logs in if needed)."""
    auth = browser_auth(url, store=store, open_browser=browser, timeout=20.0, **kwargs)

    async def get() -> httpx2.Response:
        async with httpx2.AsyncClient(auth=auth, timeout=30.0) as http:
            return await http.get(url)

    return asyncio.run(asyncio.wait_for(get(), 60))


@pytest.fixture
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[
    tuple[MockProvider, str, FileStore]
]:
    """(provider, API URL, store); an indirect parameter gives the provider's arguments."""
    with MockProvider(**getattr(request, "param", {})) as provider, ResourceServer(
        provider
    ) as api:
        yield provider, f"{api.url}/api", FileStore(tmp_path / "tokens.json", durable=False)


class Counts(NamedTuple):
    """What the provider saw: the figures issue 15 item 4 is about."""

    registrations: int
    configuration_reads: int  # GET of the RFC 7592 client configuration endpoint
    authorize_requests: int  # every GET /authorize, the probe's included
    codes_issued: int
    code_exchanges: int


def counts(provider: MockProvider) -> Counts:
    stats = provider.stats
    return Counts(stats["registrations"], stats["client_configuration_requests"],
                  stats["authorize_requests"], stats["codes_issued"], stats["code_exchanges"])


def first_login(setup: tuple[MockProvider, str, FileStore]) -> ClientInfo:
    """Log in once, then drop the tokens (keep the registration), as after a logout."""
    provider, url, store = setup
    assert login(url, store, Browser()).status_code == 200
    assert counts(provider) == Counts(1, 0, 1, 1, 1)
    client = store.get_client(default_key(url))
    assert client is not None
    store.delete(default_key(url))
    return client


def registered_again(store: FileStore, url: str, old: ClientInfo) -> ClientInfo:
    stored = store.get_client(default_key(url))
    assert stored is not None and stored.client_id != old.client_id
    return stored


def delta(before: Counts, provider: MockProvider) -> Counts:
    return Counts(*(now - then for now, then in zip(counts(provider), before)))


def login_again(setup: tuple[MockProvider, str, FileStore], **kwargs: Any) -> tuple[
    Counts, int
]:
    """Log in (successfully) again: what the provider saw, and how often the browser opened."""
    provider, url, store = setup
    before, browser = counts(provider), Browser()
    assert login(url, store, browser, **kwargs).status_code == 200
    return delta(before, provider), len(browser.opened)


# --------------------------------------------------------------------------- RFC 7592


def test_registration_keeps_the_client_configuration_endpoint(setup: Any) -> None:
    provider = setup[0]
    client = first_login(setup)
    configuration = _Configuration.of(client)
    assert configuration is not None
    assert configuration.uri == f"{provider.registration_endpoint}/{client.client_id}"
    assert configuration.access_token.startswith("rat_")


def test_valid_stored_client_one_configuration_read_one_authorization(setup: Any) -> None:
    _, url, store = setup
    client = first_login(setup)
    assert login_again(setup) == (Counts(0, 1, 1, 1, 1), 1)
    stored = store.get_client(default_key(url))
    assert stored is not None and stored.client_id == client.client_id


def test_stale_client_with_rfc7592_read_then_register_once_then_authorize(setup: Any) -> None:
    provider, url, store = setup
    client = first_login(setup)
    provider.forget_client(client.client_id)  # the configuration endpoint now answers 401
    # One browser window: the user never sees the stale client's error page.
    assert login_again(setup) == (Counts(1, 1, 1, 1, 1), 1)
    stored = registered_again(store, url, client)
    assert _Configuration.of(stored) is not None  # the new registration's endpoint is kept


def test_rotated_registration_access_token_and_secret_are_adopted(setup: Any) -> None:
    provider, url, store = setup
    client = first_login(setup)
    old = _Configuration.of(client)
    assert old is not None and client.client_secret is not None
    provider.rotate_on_configuration_read = True
    assert login(url, store, Browser()).status_code == 200  # the read rotates, the login works
    provider.rotate_on_configuration_read = False
    rotated = store.get_client(default_key(url))
    assert rotated is not None and rotated.client_id == client.client_id
    new = _Configuration.of(rotated)
    assert new is not None and new.access_token != old.access_token
    assert rotated.client_secret not in (None, client.client_secret)
    # The next login reads with the new token: 200, so no second registration.
    store.delete(default_key(url))
    assert login_again(setup)[0].registrations == 0


def test_configuration_endpoint_only_over_https_or_loopback() -> None:
    def parse(uri: str) -> _Configuration | None:
        return _Configuration.parse({"client_id": "c1", "registration_client_uri": uri,
                                     "registration_access_token": "rat_secret"})

    assert parse("https://as.example/register/c1") is not None
    assert parse("http://127.0.0.1:8080/register/c1") is not None
    assert parse("http://[::1]:8080/register/c1") is not None
    assert parse("http://as.example/register/c1") is None  # the token would go in clear text
    assert _Configuration.parse({"client_id": "c1", "registration_client_uri":
                                 "https://as.example/r"}) is None  # no token


# --------------------------------------------------------------------------- without RFC 7592


WITHOUT_RFC7592 = pytest.mark.parametrize(
    "setup", [{"client_configuration": False}], indirect=True, ids=["without-rfc7592"]
)


@WITHOUT_RFC7592
def test_without_rfc7592_no_fields_are_stored(setup: Any) -> None:
    client = first_login(setup)
    assert _Configuration.of(client) is None


@WITHOUT_RFC7592
@pytest.mark.parametrize(("authorize", "codes"), [
    ("redirect", 1),  # the stale client's authorization ends in an error redirect to us
    ("approve", 2),  # its code is refused at the token endpoint: invalid_client
], ids=["error-redirect", "invalid-client-at-token-endpoint"])
def test_stale_client_found_from_the_error_it_causes_without_a_probe(
    setup: Any, authorize: str, codes: int
) -> None:
    provider, url, store = setup
    client = first_login(setup)
    provider.forget_client(client.client_id, authorize=authorize)
    # The client registers once and the flow is retried once.
    assert login_again(setup, check_registration=False) == (Counts(1, 0, 2, codes, 1), 2)
    registered_again(store, url, client)


@WITHOUT_RFC7592
def test_a_stale_client_re_registers_once_and_never_loops(setup: Any) -> None:
    provider, url, store = setup
    client = first_login(setup)
    provider.forget_client(client.client_id, authorize="redirect")
    provider.next_authorize_error = "unauthorized_client"  # the new client is refused too
    before, browser = counts(provider), Browser()
    with pytest.raises(OAuthError) as caught:
        login(url, store, browser, check_registration=False)
    assert caught.value.error == "unauthorized_client"
    assert delta(before, provider) == Counts(1, 0, 2, 0, 0)
    assert len(browser.opened) == 2


@WITHOUT_RFC7592
def test_the_probe_for_error_page_servers_mints_no_code(setup: Any) -> None:
    """The one remaining probe (``check_registration``, on by default, only for a
    stored client without RFC 7592): one ``response_type=none`` request, no code."""
    provider, url, store = setup
    client = first_login(setup)
    assert login_again(setup) == (Counts(0, 0, 2, 1, 1), 1)

    # A server that shows an error page for the client it forgot: the probe sees
    # the 400, so the user never does.
    store.delete(default_key(url))
    provider.forget_client(client.client_id)
    assert login_again(setup) == (Counts(1, 0, 2, 1, 1), 1)


def test_what_the_probe_takes_for_a_stale_client() -> None:
    from oauth_callback.mcp.provider import _probe_finds_stale, _probe_url

    redirect = "http://localhost:5000/callback"
    probe = _probe_url("https://as.example/authorize?tenant=t1", "c1", redirect)
    assert probe.startswith("https://as.example/authorize?tenant=t1&response_type=none&")
    assert "state=" not in probe and "code_challenge" not in probe

    def answer(status: int, location: str | None = None) -> httpx2.Response:
        headers = {} if location is None else {"Location": location}
        return httpx2.Response(status, headers=headers, request=httpx2.Request("GET", probe))

    assert _probe_finds_stale(answer(400), redirect)  # the error page of RFC 6749 4.1.2.1
    assert _probe_finds_stale(answer(401), redirect)
    assert _probe_finds_stale(answer(302, f"{redirect}?error=invalid_client"), redirect)
    # The server redirected to us, so it knows the client and its redirect URI.
    assert not _probe_finds_stale(answer(302, f"{redirect}?error=unsupported_response_type"),
                                  redirect)
    assert not _probe_finds_stale(answer(302, f"{redirect}?error=unauthorized_client"), redirect)
    # A login page, or an invalid_client redirect to somewhere else: not a verdict.
    assert not _probe_finds_stale(answer(302, "https://as.example/login"), redirect)
    assert not _probe_finds_stale(answer(302, "http://evil.example/cb?error=invalid_client"),
                                  redirect)
    assert not _probe_finds_stale(answer(200), redirect)
    assert not _probe_finds_stale(answer(503), redirect)


# --------------------------------------------------------------------------- secrets


def test_the_registration_access_token_is_never_logged_nor_shown(setup: Any) -> None:
    provider, url, store = setup
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    names = ["", "oauth_callback", "mcp", "httpx2", "httpcore2"]
    saved = {name: logging.getLogger(name).level for name in names}
    handler = Keep(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        client = first_login(setup)
        provider.rotate_on_configuration_read = True
        assert login(url, store, Browser()).status_code == 200  # read (rotating), login
        store.delete(default_key(url))
        rotated = store.get_client(default_key(url))
        assert rotated is not None
        provider.forget_client(rotated.client_id)
        assert login(url, store, Browser()).status_code == 200  # read (401), register again
    finally:
        logging.getLogger().removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    final = store.get_client(default_key(url))
    assert final is not None
    tokens = [c for c in (_Configuration.of(client), _Configuration.of(rotated),
                          _Configuration.of(final)) if c is not None]
    assert len(tokens) == 3
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in records)
    assert "HTTP Request: GET" in text and "/register/" in text  # the reads were logged
    for configuration in tokens:
        secret = configuration.access_token
        assert secret not in text
        for shown in (repr(configuration), str(configuration), repr(final), str(final)):
            assert secret not in shown


@WITHOUT_RFC7592
def test_a_refresh_answered_invalid_client_drops_the_registration(setup: Any) -> None:
    """Tokens still stored, the server forgot the client: the refresh's invalid_client
    (its body read from the response) drops the registration; no probe needed."""
    provider, url, store = setup
    assert login(url, store, Browser()).status_code == 200
    client = store.get_client(default_key(url))
    assert client is not None
    provider.forget_client(client.client_id)  # an error page at /authorize
    provider.expire_access_tokens()
    assert login_again(setup, check_registration=False, refresh_margin=10**9) == (
        Counts(1, 0, 1, 1, 1), 1
    )
    registered_again(store, url, client)


@pytest.mark.parametrize("setup", [{}, {"client_configuration": False}], indirect=True,
                         ids=["rfc7592", "without-rfc7592"])
def test_a_step_up_re_authorizes_without_any_check(setup: Any) -> None:
    """A 403 insufficient_scope re-authorizes the client that just worked: one
    authorization request, no configuration read and no probe."""
    provider, url, store = setup
    assert login(url, store, Browser()).status_code == 200
    admin = url.replace("/api", "/admin")
    before, browser = counts(provider), Browser()
    auth = browser_auth(url, store=store, open_browser=browser, timeout=20.0)

    async def get() -> httpx2.Response:
        async with httpx2.AsyncClient(auth=auth, timeout=30.0) as http:
            assert (await http.get(url)).status_code == 200  # the stored tokens work
            return await http.get(admin)

    response = asyncio.run(asyncio.wait_for(get(), 60))
    assert response.status_code == 200 and "admin" in response.json()["scope"].split()
    assert (delta(before, provider), len(browser.opened)) == (Counts(0, 0, 1, 1, 1), 1)


def test_a_network_error_mid_login_releases_the_login_lock(setup: Any) -> None:
    """httpx closes the auth flow when a request of it fails: every unfinished
    sub-flow is closed too, so the login lock is released and the next login of the
    same key (here in the same process) proceeds instead of waiting for the lock."""
    _, url, store = setup
    first_login(setup)

    class TokenEndpointDown(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path == "/token":
                raise httpx2.ConnectError("the token endpoint is down", request=request)
            return await super().handle_async_request(request)

    auth = browser_auth(url, store=store, open_browser=Browser(), timeout=20.0)

    async def get() -> None:
        async with httpx2.AsyncClient(auth=auth, transport=TokenEndpointDown()) as http:
            with pytest.raises(httpx2.ConnectError):
                await http.get(url)
            # Released by the time the error arrives (not later, by garbage collection).
            with store.refresh_lock(default_key(url) + "#login", timeout=0):
                pass

    asyncio.run(asyncio.wait_for(get(), 60))
    assert login_again(setup) == (Counts(0, 1, 1, 1, 1), 1)


# --------------------------------------------------------------------------- hostile answers


class ConfigurationServer:
    """A real loopback HTTP server standing in for a client configuration endpoint: it
    answers every GET with ``body`` (200) and records the Authorization header it got."""

    def __init__(self, body: dict[str, Any]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.body, self.seen = body, []  # type: list[str | None]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append(self.headers.get("Authorization"))
                data = json.dumps(outer.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/register/c"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def stored_with_configuration_at(store: FileStore, url: str, uri: str) -> ClientInfo:
    """The stored registration, its RFC 7592 endpoint moved to ``uri`` (token kept)."""
    client = store.get_client(default_key(url))
    assert client is not None and _Configuration.of(client) is not None
    moved = client.replace(extra={**client.extra, "registrationClientUri": uri})
    store.set_client(default_key(url), moved)
    return moved


def test_a_configuration_answer_for_another_client_changes_nothing(setup: Any) -> None:
    """A read answered with another client's registration (its secret, no token): the
    stored client keeps its secret, and still works (no registration again)."""
    _, url, store = setup
    first_login(setup)
    hostile = ConfigurationServer({"client_id": "someone-else", "client_secret": "cs_evil"})
    try:
        client = stored_with_configuration_at(store, url, hostile.url)
        counted, _ = login_again(setup)
    finally:
        hostile.close()
    assert len(hostile.seen) == 1
    assert counted.registrations == 0
    stored = store.get_client(default_key(url))
    assert stored is not None and stored.client_id == client.client_id
    assert stored.client_secret == client.client_secret


def test_a_rotation_never_moves_the_token_to_another_origin(setup: Any) -> None:
    """A read that "rotates" the configuration endpoint to another host: not adopted,
    so the registration access token is never sent there."""
    _, url, store = setup
    first_login(setup)
    thief = ConfigurationServer({})
    hostile = ConfigurationServer({})
    try:
        client = stored_with_configuration_at(store, url, hostile.url)
        hostile.body = {"client_id": client.client_id, "registration_client_uri": thief.url,
                        "registration_access_token": "rat_moved"}
        assert login(url, store, Browser()).status_code == 200
        store.delete(default_key(url))
        assert login(url, store, Browser()).status_code == 200
    finally:
        thief.close()
        hostile.close()
    assert thief.seen == [] and len(hostile.seen) == 2
    stored = store.get_client(default_key(url))
    assert stored is not None
    configuration = _Configuration.of(stored)
    assert configuration is not None and configuration.uri == hostile.url


def test_a_registration_naming_an_endpoint_on_another_host_keeps_none() -> None:
    body = {"client_id": "c1", "registration_access_token": "rat_secret"}
    registered_at = "https://as.example/register"
    for uri in ("https://as.example/register/c1", "https://AS.example:443/register/c1"):
        assert _Configuration.parse({**body, "registration_client_uri": uri},
                                    origin=registered_at) is not None
    for uri in ("https://evil.example/register/c1", "https://as.example:8443/register/c1",
                "https://as.example.evil.example/c1"):
        assert _Configuration.parse({**body, "registration_client_uri": uri},
                                    origin=registered_at) is None


def test_a_registration_response_naming_another_host_is_not_kept(setup: Any) -> None:
    """The registration response's registration_client_uri on another origin than the
    registration endpoint: not stored, so no login ever sends the token there."""
    provider = setup[0]
    thief = ConfigurationServer({})
    document = provider._client_document

    def elsewhere(client_id: str) -> dict[str, Any]:
        return {**document(client_id), "registration_client_uri": thief.url}

    provider._client_document = elsewhere  # type: ignore[method-assign]
    try:
        client = first_login(setup)
        assert _Configuration.of(client) is None
        assert login_again(setup)[0].registrations == 0
    finally:
        thief.close()
    assert thief.seen == []
