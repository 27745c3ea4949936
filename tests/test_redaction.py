"""No secret in any encoding reaches an exception message, a repr or a log line.

Real sockets throughout: an echoing token/registration endpoint on 127.0.0.1,
the MockProvider, the loopback server, and the CLI demo in a subprocess with
every logger (ours, httpx2, httpcore2) at DEBUG.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from oauth_callback import FileStore, OAuthError
from oauth_callback._text import MAX_TEXT, REDACTED, clip, escape_control, redact
from oauth_callback.flow import OAuthClient
from oauth_callback.protocol import ServerMetadata, authorization_code_request, refresh_request
from oauth_callback.testing import MockProvider, follow_redirects

from .conftest import python_env

pytestmark = pytest.mark.timeout(120)

# Characters every encoding spells differently: space, slash, plus, &, =, %, non-ASCII.
SECRET = "cs sec/ret+v&a=l%ue-ü-1234"


# --------------------------------------------------------------------------- clip / redact


def _forms(secret: str) -> list[str]:
    return [
        secret,
        quote(secret, safe=""),
        quote(secret, safe="").lower(),  # lower-case hex: a re-encoding provider
        quote_plus(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    ]


@pytest.mark.parametrize("index", range(6))
def test_clip_redacts_every_encoding(index: int) -> None:
    form = _forms(SECRET)[index]
    text = f"invalid client secret {form} (sent by you)"
    clipped = clip(text, [SECRET])
    assert clipped is not None
    assert form not in clipped
    assert clipped == f"invalid client secret {REDACTED} (sent by you)"


def test_clip_redacts_base64_basic_credentials_from_the_request() -> None:
    request = authorization_code_request(
        "https://as.example/token", code="code-value-1", redirect_uri="http://127.0.0.1/cb",
        code_verifier="v" * 43, client_id="my client", client_secret=SECRET,
    )
    credentials = request.headers["Authorization"].removeprefix("Basic ")
    decoded = base64.b64decode(credentials).decode()
    for echoed in (credentials, decoded, SECRET):
        clipped = clip(f"bad credentials: {echoed}!", request.secrets())
        assert clipped is not None and echoed not in clipped and REDACTED in clipped


def test_clip_keeps_short_values_and_ordinary_text() -> None:
    # Values under 4 characters would redact ordinary words: left alone.
    assert clip("the code is abc", ["abc"]) == "the code is abc"
    assert clip("nothing to hide", [SECRET]) == "nothing to hide"
    assert clip("", [SECRET]) is None
    assert clip(None, [SECRET]) is None
    assert clip(42) is None


def test_clip_strips_control_characters_and_cuts_long_text() -> None:
    assert clip("line one\nline\x1b[31m two\x00\x9b") == "line one line [31m two"
    long = clip("x" * 1000)
    assert long is not None and len(long) == MAX_TEXT and long.endswith("…")
    # Redaction happens before the cut: a secret straddling it never leaks a prefix.
    straddling = "y" * (MAX_TEXT - 10) + SECRET
    cut = clip(straddling, [SECRET])
    assert cut is not None and SECRET[:8] not in cut


def test_clip_redacts_a_secret_whose_whitespace_the_provider_rewrote() -> None:
    secret = "two  spaces\tand-tab"
    assert clip(f"echo: {secret}", [secret]) == f"echo: {REDACTED}"
    assert clip("echo: two spaces and-tab", [secret]) == f"echo: {REDACTED}"


def test_redact_replaces_the_longest_secret_first() -> None:
    # One secret holds another: replacing the short one first would leave "head/" visible.
    inner, outer = "bbbbbbbb", "head/bbbbbbbb"
    assert redact(f"x {outer} y", [inner, outer]) == f"x {REDACTED} y"
    assert redact(f"x {quote(outer, safe='')} y {inner}", [inner, outer]) == (
        f"x {REDACTED} y {REDACTED}"
    )
    assert redact("abcd+efgh abcd efgh abcd%20efgh", ["abcd efgh"]) == " ".join([REDACTED] * 3)


def test_escape_control_shows_escapes_not_sequences() -> None:
    assert escape_control("plain text ü") == "plain text ü"
    assert escape_control("a\x1b[2Jb\x07\x9b") == "a\\x1b[2Jb\\x07\\x9b"


# --------------------------------------------------------------------------- TokenRequest


def test_token_request_repr_and_str_hold_no_secret() -> None:
    code, verifier, refresh = "code-VALUE-123", "verifier-" + "v" * 40, "refresh-VALUE-456"
    requests = [
        authorization_code_request(
            "https://as.example/token", code=code, redirect_uri="http://127.0.0.1/cb",
            code_verifier=verifier, client_id="cid", client_secret=SECRET,
            auth_method=method,
        )
        for method in ("client_secret_basic", "client_secret_post")
    ]
    requests.append(refresh_request("https://as.example/token", refresh_token=refresh,
                                    client_id="cid", client_secret=SECRET))
    for request in requests:
        text = repr(request) + str(request) + f"{request}" + repr([request])
        for value in (code, verifier, refresh, SECRET, quote_plus(SECRET, safe=""),
                      request.headers.get("Authorization", "Basic none")[6:]):
            assert value not in text
        assert "https://as.example/token" in text
        assert "grant_type" in text  # the field names are shown
    assert "client_secret" in repr(requests[1])


# --------------------------------------------------------------------------- echoing endpoints


class _Echo(BaseHTTPRequestHandler):
    """Answers every POST with an OAuth error quoting the request body and Authorization."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
        authorization = self.headers.get("Authorization") or ""
        server: Any = self.server
        if self.path == "/register":
            payload = {
                "error": "invalid_client_metadata\x1b[31m",
                "error_description": f"rejected\x1b]0;pwned\x07 {body} " + "z" * 800,
                "error_uri": "https://as.example/doc\n?x=1",
            }
        else:
            payload = {
                "error": "invalid_client",
                "error_description": f"body={body} auth={authorization}",
                "error_uri": f"https://as.example/err?{body}",
            }
        server.seen.append(body + authorization)
        data = json.dumps(payload).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _everything(exc: BaseException) -> str:
    assert isinstance(exc, OAuthError)
    return " ".join([str(exc), repr(exc), exc.error, exc.description or "", exc.uri or ""])


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_token_endpoint_echoing_the_request_gets_every_encoding_redacted(
    echo: str, method: str
) -> None:
    refresh = "rt/with+odd&chars=1234"
    client = OAuthClient("my client", client_secret=SECRET, token_endpoint=f"{echo}/token",
                         authorization_endpoint=f"{echo}/authorize",
                         token_endpoint_auth_method=method)
    with pytest.raises(OAuthError) as info:
        client.refresh(refresh)
    text = _everything(info.value)
    assert REDACTED in text
    for secret in (SECRET, refresh):
        for form in _forms(secret):
            assert form not in text, (method, form)
    if method == "client_secret_basic":
        assert "Basic " in text  # the echo really carried the header


def test_registration_error_is_redacted_and_stripped_like_token_errors(echo: str) -> None:
    statement = "eyJhbGciOi.software-statement/+signed="
    metadata = ServerMetadata(
        issuer=echo, authorization_endpoint=f"{echo}/authorize",
        token_endpoint=f"{echo}/token", registration_endpoint=f"{echo}/register",
    )
    with pytest.raises(OAuthError) as info:
        OAuthClient.register(metadata, client_name="cli", redirect_uris=["http://127.0.0.1/cb"],
                             extra_metadata={"software_statement": statement})
    err = info.value
    text = _everything(err)
    for form in _forms(statement):
        assert form not in text
    assert REDACTED in (err.description or "")
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)
    assert err.error == "invalid_client_metadata [31m"
    assert err.description is not None and len(err.description) == MAX_TEXT
    assert err.uri == "https://as.example/doc ?x=1"


# --------------------------------------------------------------------------- logs at DEBUG


_SECRETISH = re.compile(r"\b(?:at|rt|ac|cs)_[A-Za-z0-9_-]{16,}|(?:code|state)=(?!<redacted>)[^&\s\"']")


@pytest.fixture
def all_logs_at_debug() -> Iterator[list[logging.LogRecord]]:
    """Every logger at DEBUG (httpx2, httpcore2 and ours), records from every thread."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    names = ["", "oauth_callback", "httpx2", "httpcore2", "httpx", "httpcore"]
    saved = {name: logging.getLogger(name).level for name in names}
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_full_login_and_refresh_log_no_secret_at_debug(
    tmp_path: Path, all_logs_at_debug: list[logging.LogRecord]
) -> None:
    with MockProvider(clients={"conf": SECRET}) as provider:
        client = OAuthClient.discover(provider.issuer, "conf", client_secret=SECRET)
        urls: list[str] = []
        statuses: list[int] = []

        def browser(url: str) -> None:
            urls.append(url)
            thread = threading.Thread(target=lambda: statuses.append(follow_redirects(url)))
            thread.start()

        store = FileStore(tmp_path / "tokens.json", durable=False)
        tokens = client.login(store, "k", open_browser=browser, timeout=30)
        assert tokens.refresh_token is not None
        refreshed = client.refresh(tokens.refresh_token)
        form = provider.token_requests[0]
    assert statuses == [200]
    state = re.search(r"[?&]state=([^&]+)", urls[0])
    assert state is not None
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in all_logs_at_debug)
    assert "httpcore2" in text and "HTTP Request: POST" in text  # everything was captured
    for value in (SECRET, tokens.access_token, tokens.refresh_token, refreshed.access_token,
                  refreshed.refresh_token or "-", form["code"], form["code_verifier"],
                  state.group(1)):
        assert value not in text
    assert not _SECRETISH.search(text), _SECRETISH.search(text)


_ROOT_AT_DEBUG = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
from oauth_callback.cli import main
sys.exit(main(["-vv", "demo", "--headless"]))
"""


def test_demo_logs_no_secret_with_every_logger_at_debug(tmp_path: Path) -> None:
    env = python_env()
    env["HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", _ROOT_AT_DEBUG], capture_output=True,
                            text=True, env=env, timeout=100, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo complete" in result.stdout
    assert "httpcore2" in result.stderr and "oauth_callback.loopback" in result.stderr
    assert "GET /callback?code=<redacted>" in result.stderr  # the callback was logged, safely
    printed = re.findall(r"\bat_[A-Za-z0-9_-]{16,}", result.stdout)  # the demo shows tokens
    assert len(printed) == 2
    for token in printed:
        assert token not in result.stderr
    assert not _SECRETISH.search(result.stderr), _SECRETISH.search(result.stderr)


def test_mcp_login_logs_no_secret_at_debug(
    tmp_path: Path, all_logs_at_debug: list[logging.LogRecord]
) -> None:
    """The MCP provider, the SDK's OAuth client and our test browser, every logger at DEBUG."""
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+; CI installs it")
    import asyncio

    from oauth_callback.mcp import browser_auth

    from .mcp_server import AuthMCPServer, call_echo, follow_authorize

    urls: list[str] = []

    def browser(url: str) -> None:
        urls.append(url)
        follow_authorize(url)

    server = AuthMCPServer().start()
    try:
        auth = browser_auth(server.url, store=FileStore(tmp_path / "tokens.json"),
                            open_browser=browser, timeout=30.0)
        assert asyncio.run(asyncio.wait_for(call_echo(server.url, auth), 60)) == "echo: hi"
        issued = [*server.provider.access_tokens, *server.provider.refresh_tokens]
    finally:
        server.stop()
    state = re.search(r"[?&]state=([^&]+)", urls[0])
    assert state is not None and issued
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in all_logs_at_debug)
    assert "HTTP Request: POST" in text  # the SDK's requests were captured
    for value in [*issued, state.group(1)]:
        assert value not in text
    assert not re.search(r"(?:code|state)=(?!<redacted>)[^&\s\"']", text)
