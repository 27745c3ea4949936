"""The one key scheme (oauth_callback.keys): its rules, the keys of earlier versions,
and the demanding user's case, for real: ``oauth-callback login MCP_URL`` (the CLI as
a subprocess) and then ``browser_auth(MCP_URL)`` in Python use the same tokens."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from oauth_callback import ClientInfo, FileStore, MemoryStore, Tokens, default_key, resolve_key
from oauth_callback.keys import legacy_keys

from .conftest import cli_env, run_python


# The derivations of earlier versions, verbatim, to write records as they did.
def old_cli_key(url: str) -> str:
    """oauth_callback.cli.login.default_key before the one key scheme."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def old_mcp_key(server_url: str) -> str:
    """oauth_callback.mcp.default_key before the one key scheme."""
    parts = urlsplit(server_url)
    scheme = parts.scheme.lower()
    assert scheme in ("http", "https") and parts.hostname
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == {"http": 80, "https": 443}[scheme] else f"{host}:{port}"
    return f"mcp:{scheme}://{netloc}{parts.path.rstrip('/')}"


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(("url", "key"), [
    ("https://accounts.example.com", "accounts.example.com"),
    ("https://accounts.example.com/", "accounts.example.com"),
    ("HTTPS://Example.COM:443/mcp/", "example.com/mcp"),         # case, default port, slash
    ("https://example.com:8443/mcp", "example.com:8443/mcp"),
    ("https://example.com/A/b%2F", "example.com/A/b%2F"),          # the path as written
    ("https://u:p@example.com/mcp?x=1#f", "example.com/mcp"),      # userinfo, query, fragment
    ("  https://example.com/mcp  ", "example.com/mcp"),
    ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp"),   # http never shares https'
    ("http://LOCALHOST:80/", "http://localhost"),
    ("https://[::1]:8443/", "[::1]:8443"),                         # IPv6 keeps brackets
    ("https://[2001:DB8::1]/mcp", "[2001:db8::1]/mcp"),
    ("https://bücher.example/mcp", "xn--bcher-kva.example/mcp"),   # IDNA
])
def test_default_key_rules(url: str, key: str) -> None:
    assert default_key(url) == key
    assert MemoryStore().check_key(key) == key  # a derived key is a valid store key


@pytest.mark.parametrize("bad", ["example.com/mcp", "ftp://example.com", "https://", "",
                                 "https://example.com:99999/", "mailto:a@example.com",
                                 "https://a b/", "https://a<b>/"])
def test_default_key_rejects_what_is_not_an_http_url(bad: str) -> None:
    with pytest.raises(ValueError, match="store key"):
        default_key(bad)


def test_a_non_ascii_host_never_takes_another_hosts_key(tmp_path: Path) -> None:
    """IDNA 2003 (the stdlib codec) maps faß.de onto fass.de, another domain; the HTTP
    client connects to IDNA 2008's xn--fa-hia.de. The key is the host connected to, so
    fass.de's tokens are never sent to faß.de (nor ASCII look-alikes' to full-width)."""
    import httpx2

    store = FileStore(tmp_path / "tokens.json")
    store.set(resolve_key(store, "https://fass.de/mcp"), Tokens("fass-token"))
    store.set(resolve_key(store, "https://example.com/mcp"), Tokens("example-token"))
    for url in ("https://faß.de/mcp", "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/mcp", "https://FAß.de/mcp"):
        key = resolve_key(store, url)
        assert store.get(key) is None, url
    connected = httpx2.URL("https://faß.de/mcp").raw_host.decode("ascii")
    assert default_key("https://faß.de/mcp") == f"{connected}/mcp" == "xn--fa-hia.de/mcp"
    assert default_key(f"https://{connected}/mcp") == default_key("https://faß.de/mcp")


def test_old_default_key_names_are_the_new_function() -> None:
    from oauth_callback.cli import login

    assert login.default_key is default_key
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+; CI installs it")
    from oauth_callback import mcp

    assert mcp.default_key is default_key


def test_legacy_keys_are_what_earlier_versions_derived() -> None:
    for url in ("https://example.com:443/mcp/", "http://127.0.0.1:8000/mcp",
                "https://[::1]:8443/x", "https://Auth.Example.com/realms/a"):
        assert set(legacy_keys(url)) == {old_cli_key(url), old_mcp_key(url)} - {default_key(url)}
    assert legacy_keys("https://accounts.example.com") == ("mcp:https://accounts.example.com",)


# --------------------------------------------------------------------------- resolve_key


def test_resolve_key_prefers_the_new_key_then_an_old_record() -> None:
    url = "https://mcp.example.com/mcp"
    store = MemoryStore()
    assert resolve_key(store, url) == "mcp.example.com/mcp"  # nothing stored: the new key
    store.set(old_mcp_key(url), Tokens("old-mcp"))
    assert resolve_key(store, url) == "mcp:https://mcp.example.com/mcp"
    store.set_client("mcp.example.com/mcp", ClientInfo("new"))
    assert resolve_key(store, url) == "mcp.example.com/mcp"  # a record under the new key wins


def test_resolve_key_takes_a_host_key_only_for_its_own_server() -> None:
    store = MemoryStore()
    # The old CLI kept every issuer of a host under the host: realm a logged in last.
    store.set("login.example.com", Tokens("realm-a"))
    store.set_client("login.example.com",
                     ClientInfo("cid", issuer="https://login.example.com/realms/a"))
    assert resolve_key(store, "https://login.example.com/realms/a") == "login.example.com"
    assert resolve_key(store, "https://login.example.com/realms/b") == \
        "login.example.com/realms/b"
    # An https login is never used for the http URL of the same host (or the reverse).
    store.set("127.0.0.1:9000", Tokens("t"))
    store.set_client("127.0.0.1:9000", ClientInfo("cid", issuer="https://127.0.0.1:9000"))
    assert resolve_key(store, "http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    # Tokens without a registration say nothing of their server: not taken.
    store.set("tokens-only.example.com:8443", Tokens("t"))
    assert resolve_key(store, "https://tokens-only.example.com:8443/x") == \
        "tokens-only.example.com:8443/x"
    # Endpoint-only logins: the origin of the endpoints names the server.
    store.set_client("127.0.0.1:9100", ClientInfo(
        "cid", authorization_endpoint="http://127.0.0.1:9100/oauth/authorize",
        token_endpoint="http://127.0.0.1:9100/oauth/token"))
    assert resolve_key(store, "http://127.0.0.1:9100") == "127.0.0.1:9100"


def test_processes_at_once_keep_using_the_one_old_record(tmp_path: Path) -> None:
    """Nothing is copied or moved: processes of this version (and of earlier ones) that
    share the store all update the one record under the old key, so no second copy of
    the login appears, let alone one that diverges."""
    path = tmp_path / "tokens.json"
    url = "https://mcp.example.com/mcp"
    FileStore(path).set(old_mcp_key(url), Tokens("t", extra={"n": 0}))
    code = f"""
        from oauth_callback import FileStore, resolve_key
        store = FileStore({str(path)!r})
        for _ in range(10):
            key = resolve_key(store, {url!r})
            store.update(key, lambda t: t.replace(extra={{"n": t.extra["n"] + 1}}))
        print(key)
    """
    procs = [subprocess.Popen([sys.executable, "-c", code.replace("\n        ", "\n")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env(path)) for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == old_mcp_key(url)
    store = FileStore(path)
    assert store.keys() == [old_mcp_key(url)]
    tokens = store.get(old_mcp_key(url))
    assert tokens is not None and tokens.extra["n"] == 40


# --------------------------------------------------------------------------- the CLI


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oauth_callback", *args],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


class Login:
    """``oauth-callback login ...`` in the background; ``follow`` plays the browser."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oauth_callback", "login", *args, "--no-browser",
             "--timeout", "30"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)

    def finish(self, follow: object) -> tuple[int, str, str]:
        assert self.proc.stderr is not None and self.proc.stdout is not None
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            urls = [w for w in line.split() if "/authorize?" in w]
            if urls:
                follow(urls[0])  # type: ignore[operator]
                break
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, "".join(lines) + err


def follow_redirect(url: str) -> None:
    from oauth_callback.testing import follow_redirects

    assert follow_redirects(url) == 200


def test_cli_login_under_an_old_key_is_logged_in_again_there(tmp_path: Path) -> None:
    """A login an earlier CLI stored under ``host:port`` is found and renewed under that
    key by ``login --issuer URL``: no second copy under the new key."""
    from oauth_callback.testing import MockProvider

    store_path = tmp_path / "tokens.json"
    env = cli_env(store_path)
    with MockProvider(expires_in=3600) as provider:
        old = old_cli_key(provider.issuer)
        assert old != default_key(provider.issuer)  # http: the key changed
        # What the earlier CLI did: the same login, under the key it derived.
        first = Login(env, "--issuer", provider.issuer, "--client-id", provider.client_id,
                      "--key", old)
        code, out, err = first.finish(follow_redirect)
        assert code == 0, err
        before = FileStore(store_path).get(old)
        assert before is not None

        again = Login(env, "--issuer", provider.issuer, "--client-id", provider.client_id)
        code, out, err = again.finish(follow_redirect)
        assert code == 0, err
        assert out.startswith(f"Logged in: key '{old}'")
        store = FileStore(store_path)
        assert store.keys() == [old] and store.keys("clients") == [old]
        after = store.get(old)
        assert after is not None and after.access_token != before.access_token
        r = cli(env, "token", old)
        assert r.returncode == 0 and r.stdout == after.access_token + "\n"


# --------------------------------------------------------------------------- CLI and MCP


@pytest.fixture
def mcp_server() -> Iterator[object]:
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+ (httpx2); CI installs it")
    from .mcp_server import AuthMCPServer

    srv = AuthMCPServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def test_cli_login_of_an_mcp_server_then_browser_auth_uses_its_tokens(
    mcp_server: object, tmp_path: Path
) -> None:
    from oauth_callback.mcp import browser_auth

    from .mcp_server import AuthMCPServer, call_echo, follow_authorize, forbid_browser

    assert isinstance(mcp_server, AuthMCPServer)
    url = mcp_server.url
    store_path = tmp_path / "tokens.json"
    env = cli_env(store_path)
    code, out, err = Login(env, url).finish(follow_authorize)
    assert code == 0, err
    key = default_key(url)
    assert out.startswith(f"Logged in: key '{key}'")
    assert "registered client" in err  # dynamic client registration, no --client-id
    counts = mcp_server.provider.counts
    assert (counts["register"], counts["authorize"], counts["code_exchange"]) == (1, 1, 1)
    store = FileStore(store_path)
    tokens, client = store.get(key), store.get_client(key)
    assert tokens is not None and client is not None
    assert client.extra.get("mcpServerUrl") == url

    # Python, with no key given: the same tokens, no second authorization.
    auth = browser_auth(url, store=store, open_browser=forbid_browser, timeout=20.0)
    assert asyncio.run(asyncio.wait_for(call_echo(url, auth), 40)) == "echo: hi"
    assert (counts["register"], counts["authorize"]) == (1, 1)
    assert mcp_server.count(401) == 0  # the CLI's token was sent at once
    assert store.keys() == [key]

    # And the other way round: the CLI prints what browser_auth uses.
    r = cli(env, "token", key)
    assert r.returncode == 0 and r.stdout == tokens.access_token + "\n"

    # Logging in again with the CLI reuses the registration (its client id and port).
    code, out, err = Login(env, url).finish(follow_authorize)
    assert code == 0, err
    assert "registered client" not in err
    assert (counts["register"], counts["authorize"]) == (1, 2)


def test_browser_auth_finds_tokens_an_earlier_version_stored(
    mcp_server: object, tmp_path: Path
) -> None:
    """Tokens that browser_auth stored under ``mcp:<url>`` (its earlier key) are used
    where they are by browser_auth and by ``oauth-callback login URL``."""
    from oauth_callback.mcp import browser_auth

    from .mcp_server import AuthMCPServer, call_echo, follow_authorize, forbid_browser

    assert isinstance(mcp_server, AuthMCPServer)
    url = mcp_server.url
    store_path = tmp_path / "tokens.json"
    store = FileStore(store_path)
    old = old_mcp_key(url)
    first = browser_auth(url, store=store, key=old, open_browser=follow_authorize, timeout=20)
    assert asyncio.run(asyncio.wait_for(call_echo(url, first), 40)) == "echo: hi"
    stored = store.get(old)
    assert stored is not None

    auth = browser_auth(url, store=store, open_browser=forbid_browser, timeout=20.0)
    assert f"key={old!r}>" in repr(auth)
    assert asyncio.run(asyncio.wait_for(call_echo(url, auth), 40)) == "echo: hi"
    assert mcp_server.provider.counts["authorize"] == 1
    assert store.keys() == [old] and store.get(old) == stored

    code, out, err = Login(cli_env(store_path), url).finish(follow_authorize)
    assert code == 0, err
    assert out.startswith(f"Logged in: key '{old}'")
    assert store.keys() == [old] and store.keys("clients") == [old]
    assert "registered client" not in err


def test_login_url_without_resource_metadata_is_an_issuer(tmp_path: Path) -> None:
    from oauth_callback.testing import MockProvider

    store_path = tmp_path / "tokens.json"
    with MockProvider(expires_in=3600) as provider:
        code, out, err = Login(cli_env(store_path), provider.issuer, "--client-id",
                               provider.client_id).finish(follow_redirect)
    assert code == 0, err
    assert out.startswith(f"Logged in: key '{default_key(provider.issuer)}'")
    client = FileStore(store_path).get_client(default_key(provider.issuer))
    assert client is not None and "mcpServerUrl" not in client.extra


def test_login_url_and_issuer_together_is_a_usage_error(tmp_path: Path) -> None:
    r = cli(cli_env(tmp_path / "t.json"), "login", "https://mcp.example.com/mcp",
            "--issuer", "https://auth.example.com", "--client-id", "x")
    assert r.returncode == 2 and "not both" in r.stderr
    r = cli(cli_env(tmp_path / "t.json"), "login", "mcp.example.com/mcp")
    assert r.returncode == 2 and "did you mean https://mcp.example.com/mcp" in r.stderr


def test_resource_metadata_for_another_resource_is_refused() -> None:
    from oauth_callback.errors import DiscoveryError
    from oauth_callback.protocol import RawResponse
    from oauth_callback.resource import resource_metadata_flow

    flow = resource_metadata_flow("https://mcp.example.com/mcp")
    assert next(flow) == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    body = json.dumps({"resource": "https://evil.example/mcp",
                       "authorization_servers": ["https://evil.example"]}).encode()
    with pytest.raises(DiscoveryError, match=re.escape("is for 'https://evil.example/mcp'")):
        flow.send(RawResponse(200, {}, body))
    # No metadata anywhere: not a protected resource.
    flow = resource_metadata_flow("https://auth.example.com")
    assert next(flow) == "https://auth.example.com/.well-known/oauth-protected-resource"
    with pytest.raises(StopIteration) as stop:
        flow.send(RawResponse(404, {}, b""))
    assert stop.value.value is None


def test_run_python_sees_the_exports() -> None:
    out = run_python("import oauth_callback, sys; print(oauth_callback.default_key("
                     "'https://a.example/x/'), 'httpx2' in sys.modules)").stdout
    assert out.split() == ["a.example/x", "False"]


def test_a_new_key_finds_the_record_an_earlier_version_stored(tmp_path: Path) -> None:
    from oauth_callback.keys import find_key, key_url

    assert key_url("example.com/mcp") == "https://example.com/mcp"
    assert key_url("http://127.0.0.1:8000/mcp") == "http://127.0.0.1:8000/mcp"
    assert key_url("mcp:https://example.com/mcp") is None and key_url("a b") is None
    store_path = tmp_path / "tokens.json"
    store = FileStore(store_path)
    store.set(old_mcp_key("https://example.com/mcp"), Tokens("at-old", expires_at=4e9))
    assert find_key(store, "example.com/mcp") == "mcp:https://example.com/mcp"
    assert find_key(store, "other.example.com/mcp") == "other.example.com/mcp"
    assert find_key(store, "work") == "work"
    r = cli(cli_env(store_path), "token", "example.com/mcp")
    assert r.returncode == 0 and r.stdout == "at-old\n", r.stderr
    assert store.keys() == ["mcp:https://example.com/mcp"]  # read where it is, not moved


def test_login_url_refuses_a_plaintext_authorization_server_elsewhere(tmp_path: Path) -> None:
    """A resource's metadata may not send the login to http on another machine: the
    authorization server it names gets the same check as --issuer (exit 2)."""
    import http.server
    import threading

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = json.dumps({"resource": f"{host}/mcp",
                               "authorization_servers": ["http://auth.example.com"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        r = cli(cli_env(tmp_path / "t.json"), "login", url, "--no-browser")
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 2, r.stderr
    assert f"the authorization server of {url} http://auth.example.com" in r.stderr
    assert "only for loopback" in r.stderr
    assert not (tmp_path / "t.json").exists()


def test_endpoint_login_key_is_the_endpoints_origin(tmp_path: Path) -> None:
    from oauth_callback.testing import MockProvider

    store_path = tmp_path / "tokens.json"
    with MockProvider(expires_in=3600) as provider:
        code, out, err = Login(cli_env(store_path), "--authorize-url",
                               provider.authorization_endpoint, "--token-url",
                               provider.token_endpoint, "--client-id",
                               provider.client_id).finish(follow_redirect)
        assert code == 0, err
        key = f"http://127.0.0.1:{provider.port}"
        assert urlsplit(provider.authorization_endpoint).path not in ("", "/")
        assert out.startswith(f"Logged in: key '{key}'")
        assert FileStore(store_path).keys() == [key]


@pytest.fixture
def short_mcp_server() -> Iterator[object]:
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+ (httpx2); CI installs it")
    from .mcp_server import AuthMCPServer

    srv = AuthMCPServer(access_ttl=2).start()
    try:
        yield srv
    finally:
        srv.stop()


def _wait_expired(store: FileStore, key: str) -> Tokens:
    import time

    tokens = store.get(key)
    assert tokens is not None and tokens.expires_at is not None
    deadline = time.monotonic() + 30
    while not tokens.is_expired(0):
        assert time.monotonic() < deadline, "the access token did not expire"
        time.sleep(0.05)
    return tokens


def test_each_side_refreshes_what_the_other_logged_in(
    short_mcp_server: object, tmp_path: Path
) -> None:
    """The CLI's login is refreshed by browser_auth, and browser_auth's by ``token``:
    each reads the other's client registration, not only its tokens."""
    from oauth_callback.mcp import browser_auth

    from .mcp_server import AuthMCPServer, call_echo, follow_authorize, forbid_browser

    assert isinstance(short_mcp_server, AuthMCPServer)
    url = short_mcp_server.url
    counts = short_mcp_server.provider.counts
    store_path = tmp_path / "tokens.json"
    env = cli_env(store_path)
    code, _, err = Login(env, url).finish(follow_authorize)
    assert code == 0, err
    store = FileStore(store_path)
    key = default_key(url)
    old = _wait_expired(store, key)

    auth = browser_auth(url, store=store, open_browser=forbid_browser, timeout=20.0,
                        refresh_margin=0.0)
    assert asyncio.run(asyncio.wait_for(call_echo(url, auth), 40)) == "echo: hi"
    assert (counts["authorize"], counts["refresh"]) == (1, 1)
    refreshed = store.get(key)
    assert refreshed is not None and refreshed.refresh_token != old.refresh_token

    # browser_auth logs in (another store), `token` refreshes it.
    other_path = tmp_path / "other.json"
    other = FileStore(other_path)
    first = browser_auth(url, store=other, open_browser=follow_authorize, timeout=20.0)
    assert asyncio.run(asyncio.wait_for(call_echo(url, first), 40)) == "echo: hi"
    assert other.keys() == [key]
    stale = _wait_expired(other, key)
    r = cli(cli_env(other_path), "token", key)
    assert r.returncode == 0, r.stderr
    fresh = other.get(key)
    assert fresh is not None and r.stdout == fresh.access_token + "\n"
    assert fresh.access_token != stale.access_token and counts["refresh"] == 2
