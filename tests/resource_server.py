"""A real Bearer-protected resource server (RFC 6750) on loopback for the HTTP auth tests.

It trusts the tokens of a :class:`~oauth_callback.testing.MockProvider` (asked
in-process, like token introspection) and answers like a real API:

* ``/api`` (GET, POST, PUT): ``200`` ``{"client_id", "scope", "body_bytes"}``
  for an active token; ``401`` with ``WWW-Authenticate: Bearer
  error="invalid_token"`` for an unknown, expired or revoked one, and a bare
  ``Bearer realm=...`` challenge without any ``Authorization``;
* ``/admin``: needs scope ``admin`` (``403`` ``insufficient_scope``, with ``scope``);
* ``/basic``: always ``401`` with a ``Basic`` challenge (not ours to refresh);
* ``/.well-known/oauth-protected-resource[/api]``: RFC 9728 metadata naming the provider.

``current_only``: only the provider's newest access token is accepted (every
older one gets ``invalid_token``); ``reject_all``: every token is refused.
Request bodies (``Content-Length`` or chunked) are read in full. Every
request's path and token are recorded in :attr:`seen`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from oauth_callback.testing import MockProvider

REALM = "test-api"


class ResourceServer:
    def __init__(self, provider: MockProvider, *, current_only: bool = False) -> None:
        self.provider = provider
        self.current_only = current_only
        self.reject_all = False
        self.metadata: dict[str, object] = {}  # fields that replace the metadata's own
        self.metadata_url: str | None = None  # named by the 401 (resource_metadata=)
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.resource = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> ResourceServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        with self._lock:
            return list(self._seen)

    def tokens_seen(self, path: str = "/api") -> list[str | None]:
        return [token for p, token in self.seen if p == path]

    def record(self, path: str, token: str | None) -> None:
        with self._lock:
            self._seen.append((path, token))

    def answer(self, path: str, token: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.record(path, token)
        if path.startswith("/.well-known/oauth-protected-resource"):
            # RFC 9728 metadata: this API trusts the mock provider (for the MCP
            # client-credentials tests, which discover the server from here).
            prm = {"resource": f"{self.url}/api", "authorization_servers": [self.provider.issuer],
                   **self.metadata}
            return 200, {"Content-Type": "application/json"}, json.dumps(prm).encode()
        if path == "/basic":
            return 401, {"WWW-Authenticate": f'Basic realm="{REALM}"'}, b""
        if token is None:
            named = f', resource_metadata="{self.metadata_url}"' if self.metadata_url else ""
            return 401, {"WWW-Authenticate": f'Bearer realm="{REALM}"{named}'}, b""
        info = self.provider.access_token_info(token)
        if self.reject_all or info is None or (
            self.current_only and token != self.provider.last_access_token
        ):
            challenge = (f'Bearer realm="{REALM}", error="invalid_token", '
                         'error_description="The access token expired"')
            return 401, {"WWW-Authenticate": challenge}, b""
        if path == "/admin" and "admin" not in info["scope"].split():
            challenge = (f'Bearer realm="{REALM}", error="insufficient_scope", '
                         'scope="admin read", error_description="needs admin"')
            return 403, {"WWW-Authenticate": challenge}, b""
        payload = {"client_id": info["client_id"], "scope": info["scope"], "body_bytes": len(body)}
        return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        resource: ResourceServer = self.server.resource  # type: ignore[attr-defined]
        status, headers, payload = resource.answer(
            self.path.split("?")[0], token.strip() if scheme.lower() == "bearer" else None, body
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _serve
