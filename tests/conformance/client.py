"""The client command the MCP conformance suite runs, once per scenario.

    python tests/conformance/client.py --impl ours|sdk SERVER_URL

The suite (``@modelcontextprotocol/conformance``) starts a test server for the
scenario named in ``$MCP_CONFORMANCE_SCENARIO``, appends its URL to the command
and passes scenario data (pre-registered credentials, keys) as JSON in
``$MCP_CONFORMANCE_CONTEXT``. ``--impl ours`` connects with
``oauth_callback.mcp`` (a fresh ``FileStore`` in a temporary directory and a
headless "browser" that follows the authorization server's redirects to our
loopback callback); ``--impl sdk`` with the bare ``mcp`` SDK providers, for the
side-by-side baseline. Exit status 0 means the client finished its scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

SCENARIO = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
REDIRECT = "http://localhost:3000/callback"


def context() -> dict[str, Any]:
    raw = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    return json.loads(raw) if raw else {}


async def elicitation_defaults(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """Accept an elicitation with the schema's defaults (SEP-1034)."""
    content: dict[str, Any] = {}
    if isinstance(params, types.ElicitRequestFormParams):
        for name, schema in params.requested_schema.get("properties", {}).items():
            if "default" in schema:
                content[name] = schema["default"]
    return types.ElicitResult(action="accept", content=content)


async def session(server_url: str, auth: httpx2.Auth | None) -> None:
    """Initialize, list tools and call the scenario's tool, like the SDK's own client."""
    http = httpx2.AsyncClient(auth=auth, timeout=20.0, follow_redirects=True)
    async with http, streamable_http_client(server_url, http_client=http) as (read, write):
        kwargs: dict[str, Any] = {}
        if SCENARIO.startswith("elicitation"):
            kwargs["elicitation_callback"] = elicitation_defaults
        async with ClientSession(read, write, **kwargs) as s:
            await s.initialize()
            tools = await s.list_tools()
            names = {t.name for t in tools.tools}
            if SCENARIO == "tools_call" and "add_numbers" in names:
                await s.call_tool("add_numbers", {"a": 5, "b": 3})
            elif SCENARIO == "sse-retry" and "test_reconnection" in names:
                await s.call_tool("test_reconnection", {})
            elif SCENARIO.startswith("elicitation") and "test_client_elicitation_defaults" in names:
                await s.call_tool("test_client_elicitation_defaults", {})
            elif SCENARIO.startswith("auth/") and names:
                # Step-up scenarios answer a tool call with 403 insufficient_scope.
                await s.call_tool(sorted(names)[0], {})


class HeadlessBrowser:
    """Follows the authorization server's redirects, as a browser that auto-approves would.

    For ``--impl ours`` the last redirect reaches our loopback callback server;
    for the SDK the code is read from the redirect and handed to its callback.
    """

    def __init__(self) -> None:
        self.code: tuple[str, str | None] | None = None

    async def follow(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=20.0, follow_redirects=True) as c:
            await c.get(url)

    async def capture(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=20.0, follow_redirects=False) as c:
            r = await c.get(url)
        location = r.headers.get("location", "")
        q = parse_qs(urlsplit(location).query)
        if "code" not in q:
            raise RuntimeError(f"no code in the redirect (status {r.status_code})")
        self.code = (q["code"][0], q.get("state", [None])[0])

    async def callback(self) -> Any:
        from mcp.shared.auth import AuthorizationCodeResult

        assert self.code is not None
        (code, state), self.code = self.code, None
        return AuthorizationCodeResult(code=code, state=state)


def ours(server_url: str, tmp: Path) -> httpx2.Auth | None:
    from oauth_callback import FileStore
    from oauth_callback import mcp as oc_mcp

    store = FileStore(tmp / "tokens.json")
    ctx = context()
    if SCENARIO == "auth/cross-app-access-complete-flow":
        return oc_mcp.identity_assertion_auth(
            server_url,
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            issuer=asyncio.run(authorization_server(server_url)),
            assertion_provider=id_jag_provider(ctx),
            store=store,
        )
    if SCENARIO.startswith("auth/client-credentials"):
        return oc_mcp.client_credentials_auth(
            server_url,
            client_id=ctx["client_id"],
            client_secret=ctx.get("client_secret"),
            private_key=ctx.get("private_key_pem"),
            signing_algorithm=ctx.get("signing_algorithm", "ES256"),
            store=store,
        )
    if not SCENARIO.startswith("auth/"):
        return None
    browser = HeadlessBrowser()
    return oc_mcp.browser_auth(
        server_url,
        store=store,
        client_id=ctx.get("client_id"),
        client_secret=ctx.get("client_secret"),
        open_browser=browser.follow,
        timeout=20.0,
        client_metadata_url="https://conformance-test.local/client-metadata.json",
    )


async def authorization_server(server_url: str) -> str:
    """The issuer named by the MCP server's protected-resource metadata (RFC 9728)."""
    parts = urlsplit(server_url)
    base = f"{parts.scheme}://{parts.netloc}"
    async with httpx2.AsyncClient(timeout=20.0) as c:
        for url in (f"{base}/.well-known/oauth-protected-resource{parts.path}",
                    f"{base}/.well-known/oauth-protected-resource"):
            r = await c.get(url)
            if r.status_code == 200:
                return str(r.json()["authorization_servers"][0])
    raise RuntimeError("no protected-resource metadata")


def id_jag_provider(ctx: dict[str, Any]) -> Any:
    """SEP-990 leg 1: exchange the IdP's id_token for an ID-JAG (RFC 8693 token exchange)."""

    async def fetch(audience: str, resource: str) -> str:
        async with httpx2.AsyncClient(timeout=20.0) as c:
            r = await c.post(ctx["idp_token_endpoint"], data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                "subject_token": ctx["idp_id_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                "audience": audience,
                "resource": resource,
                "client_id": ctx.get("idp_client_id", ""),
            })
        r.raise_for_status()
        return str(r.json()["access_token"])

    return fetch


def sdk(server_url: str) -> httpx2.Auth | None:
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
    from pydantic import AnyUrl

    class Memory(TokenStorage):
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.client: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.client

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.client = client_info

    ctx = context()
    storage = Memory()
    if SCENARIO == "auth/cross-app-access-complete-flow":
        from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider

        return IdentityAssertionOAuthProvider(
            server_url=server_url,
            storage=storage,
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            issuer=asyncio.run(authorization_server(server_url)),
            assertion_provider=id_jag_provider(ctx),
            token_endpoint_auth_method="client_secret_basic",
        )
    if SCENARIO.startswith("auth/client-credentials"):
        from mcp.client.auth.extensions.client_credentials import (
            ClientCredentialsOAuthProvider,
            PrivateKeyJWTOAuthProvider,
            SignedJWTParameters,
        )

        if "private_key_pem" in ctx:
            params = SignedJWTParameters(
                issuer=ctx["client_id"],
                subject=ctx["client_id"],
                signing_algorithm=ctx.get("signing_algorithm", "ES256"),
                signing_key=ctx["private_key_pem"],
            )
            return PrivateKeyJWTOAuthProvider(
                server_url=server_url,
                storage=storage,
                client_id=ctx["client_id"],
                assertion_provider=params.create_assertion_provider(),
            )
        return ClientCredentialsOAuthProvider(
            server_url=server_url,
            storage=storage,
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            token_endpoint_auth_method="client_secret_basic",
        )
    if not SCENARIO.startswith("auth/"):
        return None
    if ctx.get("client_id"):
        storage.client = OAuthClientInformationFull(
            client_id=ctx["client_id"],
            client_secret=ctx.get("client_secret"),
            redirect_uris=[AnyUrl(REDIRECT)],
            token_endpoint_auth_method="client_secret_basic" if ctx.get("client_secret") else "none",
        )
    browser = HeadlessBrowser()
    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(
            client_name="conformance-client",
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.capture,
        callback_handler=browser.callback,
        client_metadata_url="https://conformance-test.local/client-metadata.json",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "sdk"], required=True)
    parser.add_argument("server_url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        auth = ours(args.server_url, Path(tmp)) if args.impl == "ours" else sdk(args.server_url)
        asyncio.run(session(args.server_url, auth))


if __name__ == "__main__":
    sys.exit(main())
