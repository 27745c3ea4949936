"""A real OAuth-protected MCP server for tests, built from the ``mcp`` SDK's own auth parts.

* :class:`MemoryAuthProvider`: an in-memory ``OAuthAuthorizationServerProvider``
  with dynamic client registration, an authorize step that approves at once
  (redirects straight back with a code), refresh tokens with rotation (the old
  refresh token is revoked) and a configurable access-token lifetime. It counts
  what it does in :attr:`MemoryAuthProvider.counts`.
* :class:`AuthMCPServer`: an ``MCPServer`` with one tool (``echo``) plus that
  provider, served by uvicorn on 127.0.0.1 in a background thread. Every HTTP
  response is recorded (method, path, status) so tests can count ``401``s.
* :func:`follow_authorize`: a headless "browser" for ``open_browser``: it
  follows the authorize redirect (quietly, with ``oauth_callback.testing.follow_redirects``)
  so the loopback server gets the code.

Run as a script, it is the client of the multi-process tests::

    python tests/mcp_server.py client URL STORE_PATH [--browser headless|forbid] [--delay S]

which connects with :func:`oauth_callback.mcp.browser_auth`, calls ``echo`` and
prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx2
import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    IdentityAssertionParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oauth_callback.testing import follow_redirects


class MemoryAuthProvider:
    """In-memory authorization server: DCR, auto-approve, rotating refresh tokens."""

    def __init__(self, access_ttl: int = 3600) -> None:
        self.access_ttl = access_ttl
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.counts["register"] += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        self.counts["authorize"] += 1
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self.codes.get(authorization_code)
        return code if code is not None and code.client_id == client.client_id else None

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        self.counts["code_exchange"] += 1
        self.codes.pop(authorization_code.code, None)
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        token = self.refresh_tokens.get(refresh_token)
        return token if token is not None and token.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        with self._lock:
            # Rotation: the old refresh token is revoked; a second use fails.
            if self.refresh_tokens.pop(refresh_token.token, None) is None:
                raise TokenError("invalid_grant", "refresh token already used")
        self.counts["refresh"] += 1
        return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        access = self.access_tokens.get(token)
        if access is None or (access.expires_at is not None and access.expires_at <= time.time()):
            return None
        return access

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access_tokens.pop(token.token, None)
        self.refresh_tokens.pop(token.token, None)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        raise TokenError("unsupported_grant_type")

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time()) + self.access_ttl,
            resource=resource,
        )
        self.refresh_tokens[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource
        )
        return OAuthToken(
            access_token=access,
            expires_in=self.access_ttl,
            refresh_token=refresh,
            scope=" ".join(scopes) or None,
        )


class _Recorder:
    """ASGI middleware recording (method, path, status) of every HTTP response."""

    def __init__(self, app: ASGIApp, log: list[tuple[str, str, int]]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.log.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, record)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class AuthMCPServer:
    """An OAuth-protected streamable-HTTP MCP server on 127.0.0.1, in a background thread."""

    def __init__(self, port: int = 0, access_ttl: int = 3600) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/mcp"
        self.provider = MemoryAuthProvider(access_ttl)
        self.responses: list[tuple[str, str, int]] = []
        server: MCPServer[Any] = MCPServer(
            "oauth-callback-test",
            auth_server_provider=self.provider,
            auth=AuthSettings(
                issuer_url=self.base_url,  # type: ignore[arg-type]
                resource_server_url=self.url,  # type: ignore[arg-type]
                client_registration_options=ClientRegistrationOptions(enabled=True),
                validate_token_resource=False,
            ),
        )

        @server.tool()
        def echo(text: str) -> str:
            """Return the text."""
            return f"echo: {text}"

        app = _Recorder(server.streamable_http_app(), self.responses)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def count(self, status: int, path: str = "/mcp") -> int:
        return sum(1 for _, p, s in self.responses if s == status and p == path)

    def start(self) -> AuthMCPServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
            name=f"mcp-test-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test MCP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)


def follow_authorize(url: str) -> None:
    """Headless browser: GET the authorize URL and follow its redirect to the loopback
    server, logging nothing (an HTTP library would log the callback URL and its code)."""
    status = follow_redirects(url)
    if status != 200:
        raise RuntimeError(f"the authorization did not end on the callback page: HTTP {status}")


def forbid_browser(url: str) -> None:
    raise AssertionError("an authorization step was started although stored tokens exist")


# --------------------------------------------------------------------------- client


async def call_echo(url: str, auth: httpx2.Auth, text: str = "hi") -> str:
    """Connect over streamable HTTP with ``auth``, call ``echo`` and return its text."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(auth=auth, timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool("echo", {"text": text})
        block = result.content[0]
        return str(getattr(block, "text", block))


def _client_main(argv: list[str]) -> int:
    from oauth_callback import FileStore
    from oauth_callback.mcp import browser_auth

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("store")
    parser.add_argument("--browser", choices=["headless", "forbid"], default="headless")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--refresh-margin", type=float, default=0.0)
    parser.add_argument("--ready", help="touch this file just before waiting for a refresh lock")
    parser.add_argument("--ready-login", help="touch this file just before waiting for the login lock")
    parser.add_argument("--browser-gate", help="the browser touches GATE.open, then waits for GATE")
    args = parser.parse_args(argv)

    class SignallingStore(FileStore):
        """Says when the provider is about to wait for the refresh (or login) lock."""

        def refresh_lock(self, key, *, timeout=None):  # type: ignore[no-untyped-def]
            ready = args.ready_login if key.endswith("#login") else args.ready
            if ready:
                open(ready, "w").close()
            return super().refresh_lock(key, timeout=timeout)

    def headless(url: str) -> None:
        time.sleep(args.delay)  # widen the window in which another process waits
        if args.browser_gate:  # the login lock is held until the test opens the gate
            open(args.browser_gate + ".open", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(args.browser_gate):
                if time.monotonic() > deadline:
                    raise RuntimeError("the test never opened the browser gate")
                time.sleep(0.01)
        follow_authorize(url)

    auth = browser_auth(
        args.url,
        store=SignallingStore(args.store),
        open_browser=headless if args.browser == "headless" else forbid_browser,
        timeout=30.0,
        refresh_margin=args.refresh_margin,
    )
    text = asyncio.run(asyncio.wait_for(call_echo(args.url, auth, "from-child"), 60))
    print(json.dumps({"text": text}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        sys.exit(_client_main(sys.argv[2:]))
    sys.exit("usage: mcp_server.py client URL STORE [--browser headless|forbid]")
