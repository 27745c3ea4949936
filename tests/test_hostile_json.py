"""A hostile server answering JSON nested deeper than Python's parser recurses (``[[[[...``):
a typed error naming the server, never a ``RecursionError`` out of the library or a
traceback from the CLI. Real loopback HTTP servers; the CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from oauth_callback import OAuthClient
from oauth_callback.errors import OAuthCallbackError

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


@pytest.fixture
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Nested)
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
