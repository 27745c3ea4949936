"""A hostile server answering JSON nested deeper than Python's parser recurses (``[[[[...``):
a typed error naming the server, never a ``RecursionError`` out of the library or a
traceback from the CLI. A hostile server answering 64 MiB: the drivers stop reading at
``MAX_RESPONSE_BYTES`` and raise the endpoint's typed error. Real loopback HTTP servers;
the CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from oauth_callback import OAuthClient, OAuthError
from oauth_callback.driver import MAX_RESPONSE_BYTES
from oauth_callback.errors import DiscoveryError, OAuthCallbackError, TokenEndpointError

from .conftest import cli_env

NESTED = b"[" * 200_000


class _Nested(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(NESTED)))
        self.end_headers()
        self.wfile.write(NESTED)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 (a free port) while the block runs: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hostile() -> Iterator[str]:
    with _serving(_Nested) as url:
        yield url


def test_token_endpoint_answering_nested_json_is_a_typed_error(hostile: str) -> None:
    client = OAuthClient("cid", client_secret="cs_secret",
                         authorization_endpoint=f"{hostile}/authorize",
                         token_endpoint=f"{hostile}/token")
    with pytest.raises(OAuthCallbackError):
        client.client_credentials()


def test_metadata_answering_nested_json_is_a_typed_error(hostile: str) -> None:
    with pytest.raises(OAuthCallbackError):
        OAuthClient.discover(hostile, "cid")


def test_cli_login_url_of_a_server_answering_nested_json(hostile: str, tmp_path: Path) -> None:
    """Protected-resource metadata, then authorization server metadata, both nested:
    an error line and a non-zero exit, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "oauth_callback",
         "login", f"{hostile}/mcp", "--client-id", "cid", "--no-browser"],
        capture_output=True, text=True, timeout=60, env=cli_env(tmp_path / "t.json"), stdin=subprocess.DEVNULL,
    )
    assert done.returncode not in (0, 1), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert hostile in done.stderr


def test_jwks_and_userinfo_answering_nested_json_are_typed_errors() -> None:
    from oauth_callback.identity import userinfo_flow
    from oauth_callback.oidc import parse_jwks
    from oauth_callback.protocol import RawResponse

    with pytest.raises(OAuthCallbackError, match="not JSON"):
        parse_jwks(NESTED, "https://as.example/jwks")
    flow = userinfo_flow("https://as.example/userinfo", "at_secret")
    next(flow)
    with pytest.raises(OAuthCallbackError):
        flow.send(RawResponse(200, {}, NESTED))


def test_cli_tokens_import_of_nested_json_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "oauth_callback", "tokens", "import", "k"],
        input='{"access_token": ' + "[" * 200_000, capture_output=True, text=True,
        timeout=60, env=cli_env(tmp_path / "t.json"),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not valid JSON" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- size

HUGE = 64 * 2**20
CHUNK = 64 * 1024
PREFIX = b'{"access_token": "'


@dataclass
class _Hostile:
    url: str
    # "chunked": HUGE bytes, no length; "length": HUGE bytes with Content-Length;
    # "declared": Content-Length HUGE, then only the first bytes until the client hangs up
    # (a client that read the body would wait for the rest: a timeout, not the refusal).
    mode: str
    sent: list[int] = field(default_factory=list)  # body bytes written, per answer
    done: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def wait_answers(self, count: int) -> list[int]:
        """The byte counts of the first ``count`` answers, once each handler is done."""
        for _ in range(count):
            assert self.done.acquire(timeout=60), "the hostile server never finished"
        return self.sent[:count]


def _handler(state: _Hostile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if state.mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(HUGE))
            self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            try:
                if state.mode == "declared":
                    self.wfile.write(PREFIX)
                    self.wfile.flush()
                    sent = len(PREFIX)
                    self.rfile.read(1)  # returns once the client closed the connection
                while state.mode != "declared" and sent < HUGE:
                    data = (PREFIX if sent == 0 else b"") + b"a" * CHUNK
                    data = data[: HUGE - sent]
                    if state.mode == "chunked":
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    else:
                        self.wfile.write(data)
                    sent += len(data)
                if state.mode == "chunked":
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:  # the client hung up
                pass
            finally:
                state.sent.append(sent)
                state.done.release()
            self.close_connection = True

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(params=["chunked", "length", "declared"])
def huge(request: pytest.FixtureRequest) -> Iterator[_Hostile]:
    state = _Hostile("", request.param)
    with _serving(_handler(state)) as state.url:
        yield state


def _form_client(base: str) -> OAuthClient:
    return OAuthClient("cid", client_secret="cs_secret",
                       authorization_endpoint=f"{base}/authorize",
                       token_endpoint=f"{base}/token", timeout=10)


def _assert_stopped_early(sent: list[int]) -> None:
    # Socket buffers on loopback hold a few MiB; the answer is 64 MiB.
    assert all(n < HUGE // 2 for n in sent), sent


def test_a_huge_token_answer_is_a_token_endpoint_error(huge: _Hostile) -> None:
    with pytest.raises(TokenEndpointError, match="more than 1048576 bytes") as caught:
        _form_client(huge.url).client_credentials()
    assert f"{huge.url}/token" in str(caught.value)
    assert caught.value.status_code == 200
    _assert_stopped_early(huge.wait_answers(1))


@pytest.mark.asyncio
async def test_a_huge_token_answer_is_a_token_endpoint_error_async(huge: _Hostile) -> None:
    with pytest.raises(TokenEndpointError, match="more than 1048576 bytes"):
        await _form_client(huge.url).client_credentials_async()
    _assert_stopped_early(huge.wait_answers(1))


def test_a_huge_metadata_document_is_a_discovery_error(huge: _Hostile) -> None:
    with pytest.raises(DiscoveryError, match="more than 1048576 bytes") as caught:
        OAuthClient.discover(huge.url, "cid", timeout=10)
    assert "/.well-known/oauth-authorization-server" in str(caught.value)
    _assert_stopped_early(huge.wait_answers(2))  # RFC 8414, then OIDC


@pytest.mark.asyncio
async def test_a_huge_metadata_document_is_a_discovery_error_async(huge: _Hostile) -> None:
    with pytest.raises(DiscoveryError, match="more than 1048576 bytes"):
        await OAuthClient.discover_async(huge.url, "cid", timeout=10)
    _assert_stopped_early(huge.wait_answers(2))


def _token_answer(size: int) -> bytes:
    """A valid JSON token answer of exactly ``size`` bytes (a long ``client_secret``)."""
    head = b'{"access_token": "at", "token_type": "Bearer", "client_secret": "'
    return head + b"p" * (size - len(head) - 2) + b'"}'


@contextmanager
def _answering(body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as url:
        yield url


def test_an_answer_of_exactly_the_bound_is_read() -> None:
    assert MAX_RESPONSE_BYTES == 2**20
    with _answering(_token_answer(MAX_RESPONSE_BYTES)) as url:
        assert _form_client(url).client_credentials().access_token == "at"


@pytest.mark.asyncio
async def test_the_mcp_adapter_adopts_nothing_of_a_json_answer_over_the_bound() -> None:
    """``_json_body`` (registration and RFC 7592 configuration answers): a valid JSON
    answer one byte over the bound is ``None``, so no huge "rotated" secret is stored."""
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+ (httpx2); CI installs it")
    import httpx2

    from oauth_callback.mcp.provider import _json_body

    async with httpx2.AsyncClient(timeout=10) as http:
        for size, parsed in ((MAX_RESPONSE_BYTES, True), (MAX_RESPONSE_BYTES + 1, False)):
            with _answering(_token_answer(size)) as url:
                async with http.stream("GET", f"{url}/register/cid") as response:
                    assert (await _json_body(response) is not None) is parsed, size


@pytest.mark.asyncio
async def test_mcp_client_credentials_discovery_of_a_huge_resource_metadata(
    huge: _Hostile,
) -> None:
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+ (httpx2); CI installs it")
    from oauth_callback.mcp.provider import client_credentials_auth

    auth = client_credentials_auth(f"{huge.url}/mcp", client_id="cid", client_secret="cs",
                                   timeout=10)
    with pytest.raises(OAuthError, match="no protected-resource metadata"):
        await auth._discover(None)
    _assert_stopped_early(huge.wait_answers(2))  # path-aware, then the origin's
