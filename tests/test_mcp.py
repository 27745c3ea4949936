"""oauth_callback.mcp against a real OAuth-protected MCP server (the SDK's own auth parts).

The server (tests/mcp_server.py) runs with uvicorn on 127.0.0.1 in a background
thread; the client is the SDK's streamable-HTTP client with our provider, in
this process or in real subprocesses sharing a FileStore. The "browser" is
headless: it follows the authorize redirect so the loopback server gets the code.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+ (httpx2); CI installs it")

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from oauth_callback import ClientInfo, FileStore, MemoryStore, Tokens
from oauth_callback.mcp import StoreTokenStorage, browser_auth, default_key

from .mcp_server import AuthMCPServer, call_echo, follow_authorize, forbid_browser

HELPER = Path(__file__).with_name("mcp_server.py")
ROOT = HELPER.parent.parent

pytestmark = pytest.mark.timeout(90)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def server() -> Iterator[AuthMCPServer]:
    srv = AuthMCPServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def short_server() -> Iterator[AuthMCPServer]:
    """Access tokens live 2 s."""
    srv = AuthMCPServer(access_ttl=2).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


def connect(
    url: str,
    store: FileStore,
    browser: Callable[[str], object] = follow_authorize,
    **kwargs: float,
) -> str:
    auth = browser_auth(url, store=store, open_browser=browser, timeout=20.0, **kwargs)  # type: ignore[arg-type]
    return asyncio.run(asyncio.wait_for(call_echo(url, auth), 40))


def spawn(url: str, store_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(
        [sys.executable, str(HELPER), "client", url, str(store_path), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_expired(server: AuthMCPServer, tokens: Tokens, timeout: float = 60.0) -> None:
    """Wait until both sides see ``tokens`` expired: the client's record and the server.

    A condition, not a sleep to the wall-clock expiry plus a margin (which a
    loaded machine can outrun).
    """
    deadline = time.monotonic() + timeout
    while True:
        access = server.provider.access_tokens.get(tokens.access_token)
        server_expired = access is None or (
            access.expires_at is not None and access.expires_at <= time.time()
        )
        if tokens.is_expired(0) and server_expired:
            return
        assert time.monotonic() < deadline, "the access token did not expire"
        time.sleep(0.05)


def result(proc: subprocess.Popen[str]) -> dict[str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"client process timed out: {err}") from None
    assert proc.returncode == 0, err
    data: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return data


# --------------------------------------------------------------------------- storage


def test_default_key_normalizes() -> None:
    assert default_key("HTTPS://Example.COM:443/mcp/") == "example.com/mcp"
    assert default_key("http://127.0.0.1:8000/mcp?x=1#f") == "http://127.0.0.1:8000/mcp"
    assert default_key("https://u:p@example.com") == "example.com"
    with pytest.raises(ValueError):
        default_key("example.com/mcp")


@pytest.mark.asyncio
async def test_storage_persists_absolute_expiry() -> None:
    store = MemoryStore()
    storage = StoreTokenStorage(store, "k")
    assert await storage.get_tokens() is None
    before = time.time()
    await storage.set_tokens(OAuthToken(access_token="a", refresh_token="r", expires_in=100))
    stored = store.get("k")
    assert stored is not None and stored.expires_at is not None
    assert before + 100 - 0.001 <= stored.expires_at <= time.time() + 100 + 0.001  # ms records
    loaded = await storage.get_tokens()
    assert loaded is not None and loaded.refresh_token == "r"
    assert loaded.expires_in is not None and 98 <= loaded.expires_in <= 100

    # Time passes (a restart later): the reload reports what remains, never the original.
    store.set("k", stored.replace(expires_at=time.time() + 10))
    loaded = await storage.get_tokens()
    assert loaded is not None and loaded.expires_in is not None and 8 <= loaded.expires_in <= 10
    store.set("k", stored.replace(expires_at=time.time() - 50))
    loaded = await storage.get_tokens()
    assert loaded is not None and loaded.expires_in == 0


@pytest.mark.asyncio
async def test_storage_round_trips_client_info() -> None:
    store = MemoryStore()
    storage = StoreTokenStorage(store, "k", server_url="https://mcp.example.com/mcp")
    info = OAuthClientInformationFull(
        client_id="cid",
        client_secret="sec",
        client_id_issued_at=1700000000,
        client_secret_expires_at=0,
        redirect_uris=["http://localhost:4321/callback"],  # type: ignore[list-item]
        token_endpoint_auth_method="client_secret_post",
        issuer="https://auth.example.com",
        client_name="demo",
        scope="read write",
    )
    await storage.set_client_info(info)
    record = store.get_client("k")
    assert isinstance(record, ClientInfo)
    assert record.issuer == "https://auth.example.com"
    assert record.redirect_uri == "http://localhost:4321/callback"
    assert record.extra["mcpServerUrl"] == "https://mcp.example.com/mcp"
    assert await storage.get_client_info() == info
    # A record written by another tool (no RFC 7591 extras) still loads.
    store.set_client("k", ClientInfo(client_id="other", redirect_uri="http://localhost:1/cb"))
    other = await storage.get_client_info()
    assert other is not None and other.client_id == "other"
    assert [str(u) for u in other.redirect_uris or []] == ["http://localhost:1/cb"]


# --------------------------------------------------------------------------- end to end


def test_first_connection_registers_and_logs_in(server: AuthMCPServer, store_path: Path) -> None:
    store = FileStore(store_path)
    seen: list[str] = []

    def browser(url: str) -> None:
        seen.append(url)
        follow_authorize(url)

    assert connect(server.url, store, browser) == "echo: hi"
    counts = server.provider.counts
    assert (counts["register"], counts["authorize"], counts["code_exchange"]) == (1, 1, 1)
    assert (
        "code_challenge_method=S256" in seen[0] and "redirect_uri=http%3A%2F%2Flocalhost" in seen[0]
    )

    key = default_key(server.url)
    tokens, client = store.get(key), store.get_client(key)
    assert tokens is not None and tokens.refresh_token and tokens.expires_at
    assert tokens.expires_at > time.time() + 3000
    assert client is not None and client.token_endpoint == f"{server.base_url}/token"
    assert client.redirect_uri is not None and client.redirect_uri.startswith("http://localhost:")

    # The same store again, in this process: no second authorization.
    assert connect(server.url, store, forbid_browser) == "echo: hi"
    assert counts["authorize"] == 1 and counts["register"] == 1


def test_second_process_reuses_stored_tokens(server: AuthMCPServer, store_path: Path) -> None:
    assert connect(server.url, FileStore(store_path)) == "echo: hi"
    assert result(spawn(server.url, store_path, "--browser", "forbid")) == {
        "text": "echo: from-child"
    }
    counts = server.provider.counts
    assert (counts["register"], counts["authorize"], counts["refresh"]) == (1, 1, 0)


def test_expired_token_refreshed_before_first_request(
    short_server: AuthMCPServer, store_path: Path
) -> None:
    store = FileStore(store_path)
    assert connect(short_server.url, store, refresh_margin=0.0) == "echo: hi"
    key = default_key(short_server.url)
    old = store.get(key)
    assert old is not None and old.expires_at is not None
    wait_until_expired(short_server, old)
    assert old.is_expired(0)

    unauthorized = short_server.count(401)
    # A new process (a restart): the stored token is expired, so it refreshes first.
    proc = spawn(short_server.url, store_path, "--browser", "forbid")
    assert result(proc) == {"text": "echo: from-child"}
    assert short_server.count(401) == unauthorized, "the expired token was sent (401 round trip)"
    counts = short_server.provider.counts
    assert counts["refresh"] >= 1 and counts["authorize"] == 1
    new = store.get(key)
    assert new is not None and new.refresh_token != old.refresh_token  # rotated and persisted
    assert old.refresh_token not in short_server.provider.refresh_tokens


def test_expired_token_two_processes_refresh_once(
    short_server: AuthMCPServer, store_path: Path
) -> None:
    store = FileStore(store_path)
    assert connect(short_server.url, store, refresh_margin=0.0) == "echo: hi"
    old = store.get(default_key(short_server.url))
    assert old is not None and old.expires_at is not None
    wait_until_expired(short_server, old)

    # Both start with the same expired token and a rotating refresh token: only
    # one may spend it; the other must pick up the result from the store.
    procs = [spawn(short_server.url, store_path, "--browser", "forbid") for _ in range(2)]
    assert [result(p) for p in procs] == [{"text": "echo: from-child"}] * 2
    counts = short_server.provider.counts
    assert counts["authorize"] == 1
    assert counts["refresh"] == 1


def test_server_restart_forgets_client_reregisters_once(
    server: AuthMCPServer, store_path: Path
) -> None:
    store = FileStore(store_path)
    assert connect(server.url, store) == "echo: hi"
    key = default_key(server.url)
    old_client = store.get_client(key)
    assert old_client is not None
    server.stop()

    # Same URL, but the authorization server lost every registration and token.
    restarted = AuthMCPServer(port=server.port).start()
    try:
        assert connect(restarted.url, store) == "echo: hi"
        counts = restarted.provider.counts
        assert (counts["register"], counts["authorize"]) == (1, 1)
        new_client = store.get_client(key)
        assert new_client is not None and new_client.client_id != old_client.client_id
        assert new_client.client_id in restarted.provider.clients
        # The stored client was rejected at /token (invalid_client), not at /authorize.
        assert ("POST", "/token", 401) in restarted.responses
    finally:
        restarted.stop()


def test_stale_client_rejected_at_authorize_reregisters_once(
    server: AuthMCPServer, store_path: Path
) -> None:
    store = FileStore(store_path)
    assert connect(server.url, store) == "echo: hi"
    key = default_key(server.url)
    store.delete(key)  # keep only the (soon stale) client registration
    server.stop()

    restarted = AuthMCPServer(port=server.port).start()
    try:
        opened: list[str] = []

        def browser(url: str) -> None:
            opened.append(url)
            follow_authorize(url)

        assert connect(restarted.url, store, browser) == "echo: hi"
        counts = restarted.provider.counts
        assert (counts["register"], counts["authorize"]) == (1, 1)
        assert len(opened) == 1, "the user must not see the error page of the stale client"
        assert ("GET", "/authorize", 400) in restarted.responses
        client = store.get_client(key)
        assert client is not None and client.client_id in restarted.provider.clients
    finally:
        restarted.stop()


def test_two_processes_at_once_authorize_once(server: AuthMCPServer, store_path: Path) -> None:
    # The "browser" of each child waits 1 s before answering, so the other child
    # certainly arrives while the first login is in progress.
    procs = [spawn(server.url, store_path, "--delay", "1.0") for _ in range(2)]
    assert [result(p) for p in procs] == [{"text": "echo: from-child"}] * 2
    counts = server.provider.counts
    assert (counts["register"], counts["authorize"], counts["code_exchange"]) == (1, 1, 1)
    tokens = FileStore(store_path).get(default_key(server.url))
    assert isinstance(tokens, Tokens)


def test_four_second_tokens_two_processes_at_once_authorize_once(store_path: Path) -> None:
    """Issue 9 item 10 through the MCP provider: with 4 s access tokens and the default
    30 s refresh margin, the process that waited for the other's login must use the
    tokens it finds (margin min(30, 4 / 2) = 2 s), not open the browser again."""
    srv = AuthMCPServer(access_ttl=4).start()
    try:
        procs = [spawn(srv.url, store_path, "--delay", "1.0", "--refresh-margin", "30")
                 for _ in range(2)]
        assert [result(p) for p in procs] == [{"text": "echo: from-child"}] * 2
        counts = srv.provider.counts
        assert (counts["authorize"], counts["code_exchange"]) == (1, 1)
    finally:
        srv.stop()


def _wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the child ended early: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.01)


def test_a_login_waiter_slower_than_the_refresh_margin_refreshes_instead_of_authorizing(
    store_path: Path, tmp_path: Path
) -> None:
    """The race of the test above, made certain: the second process is paused while it
    waits for the first one's login, and resumed only once the tokens it will find
    are within their refresh margin (2 s of 4). It refreshes them; it must not open
    the browser (its browser is forbidden) for a second authorization."""
    srv = AuthMCPServer(access_ttl=4).start()
    try:
        gate, waiting = tmp_path / "gate", tmp_path / "waiting"
        first = spawn(srv.url, store_path, "--browser-gate", str(gate), "--refresh-margin", "30")
        _wait_for_file(tmp_path / "gate.open", first)  # it holds the login lock, in its browser
        second = spawn(srv.url, store_path, "--browser", "forbid", "--refresh-margin", "30",
                       "--ready-login", str(waiting))
        try:
            _wait_for_file(waiting, second)  # it waits for the login lock
            second.send_signal(signal.SIGSTOP)
            gate.touch()
            assert result(first) == {"text": "echo: from-child"}
            store, key = FileStore(store_path), default_key(srv.url)
            deadline = time.monotonic() + 60
            while True:  # the first login's tokens enter their refresh margin
                tokens = store.get(key)
                assert tokens is not None and tokens.lifetime == 4
                if tokens.needs_refresh(30):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            second.send_signal(signal.SIGCONT)
        assert result(second) == {"text": "echo: from-child"}
        counts = srv.provider.counts
        assert (counts["authorize"], counts["code_exchange"], counts["refresh"]) == (1, 1, 1)
    finally:
        srv.stop()


def test_refresh_waiters_re_read_the_store_under_the_lock(
    short_server: AuthMCPServer, store_path: Path, tmp_path: Path
) -> None:
    """Issue 9 item 14: the test holds the key's refresh lock until both children wait
    for it, refreshes meanwhile (as a third process would), then lets them go. Each
    must re-read the store under the lock and use those tokens: without the re-read
    they would spend the rotated refresh token (invalid_grant) and log in again."""
    from oauth_callback.manager import TokenManager

    store = FileStore(store_path)
    key = default_key(short_server.url)
    assert connect(short_server.url, store, refresh_margin=0.0) == "echo: hi"
    old = store.get(key)
    assert old is not None
    wait_until_expired(short_server, old)
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    with store.refresh_lock(key, timeout=30):
        procs = [spawn(short_server.url, store_path, "--browser", "forbid", "--ready", str(r))
                 for r in ready]
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):  # both are at the lock, waiting
            assert time.monotonic() < deadline, "the children never reached the refresh lock"
            assert all(p.poll() is None for p in procs), "a child ended before the lock"
            time.sleep(0.02)
        short_server.provider.access_ttl = 3600  # the refresh below gives a lasting token
        renewed = TokenManager(store, key, skew=0.0).tokens()  # re-enters the held lock
        assert renewed.access_token != old.access_token
    assert [result(p) for p in procs] == [{"text": "echo: from-child"}] * 2
    counts = short_server.provider.counts
    assert counts["refresh"] == 1 and counts["authorize"] == 1
    assert store.get(key) == renewed


def _fixed_provider(tmp_path: Path, **kwargs: object) -> Any:
    from mcp.shared.auth import OAuthMetadata

    from oauth_callback import FileStore
    from oauth_callback.mcp import browser_auth

    provider = browser_auth(
        "http://127.0.0.1:1/mcp", store=FileStore(tmp_path / "t.json"),
        client_id="pre", client_secret="s3cret", open_browser=False, **kwargs,  # type: ignore[arg-type]
    )

    def metadata(supported: list[str] | None) -> OAuthMetadata:
        return OAuthMetadata(
            issuer="http://127.0.0.1:1", authorization_endpoint="http://127.0.0.1:1/authorize",
            token_endpoint="http://127.0.0.1:1/token",
            token_endpoint_auth_methods_supported=supported,
        )

    provider.context.client_info = provider._oc_fixed_client  # as _initialize() does
    return provider, metadata


def test_preregistered_client_uses_basic_unless_server_lists_only_post(tmp_path: Path) -> None:
    provider, metadata = _fixed_provider(tmp_path)
    assert provider.context.client_info.token_endpoint_auth_method == "client_secret_basic"
    provider.context.oauth_metadata = metadata(["client_secret_basic", "client_secret_post"])
    provider._oc_choose_fixed_auth_method()
    assert provider.context.client_info.token_endpoint_auth_method == "client_secret_basic"
    provider.context.oauth_metadata = metadata(["client_secret_post"])
    provider._oc_choose_fixed_auth_method()
    assert provider.context.client_info.token_endpoint_auth_method == "client_secret_post"
    assert provider._oc_fixed_client.token_endpoint_auth_method == "client_secret_post"


def test_preregistered_client_explicit_auth_method_wins(tmp_path: Path) -> None:
    provider, metadata = _fixed_provider(tmp_path, token_endpoint_auth_method="client_secret_post")
    assert provider.context.client_info.token_endpoint_auth_method == "client_secret_post"
    provider.context.oauth_metadata = metadata(["client_secret_basic"])
    provider._oc_choose_fixed_auth_method()
    assert provider.context.client_info.token_endpoint_auth_method == "client_secret_post"


_CC_CHILD = r"""
import asyncio, json, sys
import httpx2
from oauth_callback import FileStore
from oauth_callback.mcp import client_credentials_auth

url, store_path, client_id, secret = sys.argv[1:5]
auth = client_credentials_auth(url, client_id=client_id, client_secret=secret,
                               store=FileStore(store_path), key="machine")

async def main() -> None:
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        r = await http.get(url)
        print(json.dumps({"status": r.status_code, "body": r.json()}))

asyncio.run(main())
"""


def _run_cc_children(
    url: str, store: Path, client_id: str, secret: str, n: int
) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", _CC_CHILD, url, str(store), client_id, secret],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_client_credentials_auth_four_processes_one_token_request(tmp_path: Path) -> None:
    """Discovery through RFC 9728 metadata, the grant once for four processes at
    once, and once more (a renewal) after the stored token expired."""
    from oauth_callback import FileStore
    from oauth_callback.testing import MockProvider

    from .resource_server import ResourceServer

    with MockProvider(auth_methods=["client_secret_basic"]) as provider, \
            ResourceServer(provider) as api:
        client_id, secret = provider.register_machine_client()
        assert secret is not None
        provider.token_delay = 1.5  # a slow grant: the four processes overlap in it
        store_path = tmp_path / "tokens.json"
        results = _run_cc_children(f"{api.url}/api", store_path, client_id, secret, 4)
        assert [r["status"] for r in results] == [200] * 4
        assert {r["body"]["client_id"] for r in results} == {client_id}
        assert provider.client_credentials_count == 1
        store = FileStore(store_path)
        stored = store.get("machine")
        assert stored is not None and stored.refresh_token is None
        client = store.get_client("machine")
        assert client is not None and client.client_secret is None  # the secret is never stored
        assert secret not in store_path.read_text()

        store.update("machine", lambda t: t.replace(expires_at=time.time() - 1) if t else None)
        results = _run_cc_children(f"{api.url}/api", store_path, client_id, secret, 4)
        assert [r["status"] for r in results] == [200] * 4
        assert provider.client_credentials_count == 2  # one renewal for all four


@pytest.mark.parametrize(("metadata", "refused"), [
    ({"resource": "https://other-api.example/api"}, "is for 'https://other-api.example/api'"),
    ({"authorization_servers": ["http://as.invalid"]}, "http only on loopback"),
], ids=["another-resource", "plaintext-authorization-server"])
@pytest.mark.parametrize("named", [False, True], ids=["well-known", "named-by-the-401"])
def test_client_credentials_auth_refuses_metadata_of_another_resource(
    tmp_path: Path, metadata: dict[str, Any], refused: str, named: bool
) -> None:
    """A resource server whose RFC 9728 metadata names another resource (a token for
    that API would be sent here) or a plaintext authorization server (the client secret
    and the metadata in clear text): refused before any token request."""
    import httpx2

    from oauth_callback.errors import DiscoveryError
    from oauth_callback.mcp import client_credentials_auth
    from oauth_callback.testing import MockProvider

    from .resource_server import ResourceServer

    with MockProvider(auth_methods=["client_secret_basic"]) as provider, \
            ResourceServer(provider) as api, ResourceServer(provider) as elsewhere:
        client_id, secret = provider.register_machine_client()
        if named:  # the 401 names the metadata of another server, which says it
            elsewhere.metadata = {"resource": f"{api.url}/api", **metadata}
            api.metadata_url = f"{elsewhere.url}/.well-known/oauth-protected-resource"
        else:
            api.metadata = metadata
        auth = client_credentials_auth(f"{api.url}/api", client_id=client_id,
                                       client_secret=secret, timeout=10.0,
                                       store=FileStore(tmp_path / "tokens.json"))

        async def get() -> None:
            async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
                await http.get(f"{api.url}/api")

        with pytest.raises(DiscoveryError, match=re.escape(refused)):
            asyncio.run(asyncio.wait_for(get(), 60))
        assert provider.client_credentials_count == 0
        assert [token for token in api.tokens_seen() if token] == []


# --------------------------------------------------------------------------- SDK internals


def test_a_missing_sdk_internal_fails_at_import() -> None:
    """Every private part of the SDK we touch is checked when oauth_callback.mcp is imported."""
    code = ("import mcp.client.auth as a\n"
            "del a.OAuthClientProvider._handle_refresh_response\n"
            "try:\n"
            "    import oauth_callback.mcp\n"
            "except ImportError as exc:\n"
            "    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert "refused:" in done.stdout and "_handle_refresh_response" in done.stdout, done.stderr


def test_our_names_may_not_collide_with_the_sdks() -> None:
    from oauth_callback.mcp import StoreOAuthClientProvider, _sdk_compat

    _sdk_compat.check_own_names(StoreOAuthClientProvider)  # as at import: no clash today

    class Clashing(StoreOAuthClientProvider):
        def _select_authorization_server(self) -> None:  # an SDK method we do not override
            return None

    with pytest.raises(ImportError, match="_select_authorization_server"):
        _sdk_compat.check_own_names(Clashing)


def test_our_names_on_the_sdk_provider_carry_the_prefix() -> None:
    """Issue 11 item 3: every name our subclass adds (a method, or an attribute any
    method assigns) starts with _oc_, so a later SDK release cannot take it."""
    from oauth_callback.mcp import StoreOAuthClientProvider, _sdk_compat

    assert _sdk_compat.OWN_PREFIX == "_oc_"
    names = set(vars(StoreOAuthClientProvider)) | _sdk_compat._assigned_attributes(
        StoreOAuthClientProvider
    )
    assert {"_oc_store", "_oc_key", "_oc_fixed_client", "_oc_state", "_oc_login_flow"} <= names

    class AttributeWithoutPrefix(StoreOAuthClientProvider):
        def _oc_remember(self) -> None:
            self._cache = 1

    class MethodWithoutPrefix(StoreOAuthClientProvider):
        def helper(self) -> None:
            return None

    with pytest.raises(TypeError, match="_cache"):
        _sdk_compat.check_own_names(AttributeWithoutPrefix)
    with pytest.raises(TypeError, match="helper"):
        _sdk_compat.check_own_names(MethodWithoutPrefix)
