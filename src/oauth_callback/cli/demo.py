"""``oauth-callback demo``: the whole flow against an embedded mock provider, step by step."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._http import httpx2
from ..browser import no_graphical_display
from ..flow import OAuthClient
from ..manager import TokenManager
from ..models import fingerprint
from ..storage.file import FileStore
from ..testing import MockProvider
from ._common import EXIT_FAILURE, EXIT_OK, PROG, human_expiry, info, mode_line, store_from_args
from ._login_ui import show_device_code

if TYPE_CHECKING:
    from ..device import DeviceAuthorization
    from ..storage.base import TokenStore
__all__ = ["cmd_demo", "follow_authorization"]


def follow_authorization(url: str) -> int:
    """Complete an auto-approving authorization headlessly: GET ``url`` following redirects.

    Returns the status of the final response (the loopback callback page). It
    logs nothing (an HTTP library would log the callback URL with its code).
    """
    from ..testing import follow_redirects

    return follow_redirects(url)


@contextlib.contextmanager
def _demo_store(args: argparse.Namespace) -> Iterator[TokenStore]:
    if getattr(args, "store", None) is not None:
        yield store_from_args(args)
        return
    directory = tempfile.mkdtemp(prefix="oauth-callback-demo-")
    try:
        yield FileStore(os.path.join(directory, "tokens.json"))
    finally:
        if args.keep:
            info(f"kept the demo store in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
            info(f"removed the temporary store {directory} (--keep keeps it)")


def _step(n: int, text: str) -> None:
    print(f"\n[{n}] {text}", flush=True)


def _say(text: str) -> None:
    print(f"    {text}", flush=True)


def _demo_token(store: TokenStore, key: str, label: str) -> str:
    shown = f"--store {store.path} " if isinstance(store, FileStore) else ""
    _say(f"$ {PROG} {shown}token {key}    # {label}")
    token = TokenManager(store, key).access_token()
    _say(token)
    return token


def _run_demo(args: argparse.Namespace, provider: MockProvider, store: TokenStore) -> int:
    key = "demo"
    headless = args.no_browser or no_graphical_display()
    _step(1, f"Started a mock OAuth provider at {provider.issuer}")
    _step(2, f"Token store: {store.describe()}")
    _step(3, "Discovering the provider's endpoints (RFC 8414)")
    client = OAuthClient.discover(provider.issuer, client_id=provider.client_id, scope="read")
    _say(f"authorization endpoint: {provider.authorization_endpoint}")
    _say(f"token endpoint:         {provider.token_endpoint}")
    _step(4, "Logging in: authorization code + PKCE on a loopback redirect URI")
    used: list[str] = []

    def show(url: str) -> None:
        if not headless:
            import webbrowser

            try:
                opened = webbrowser.open(url)
            except Exception:
                opened = False
            if opened:
                used.append("browser")
                _say("opened the authorization page in your browser; the mock provider approves "
                     "at once and redirects to the loopback callback (waiting up to 120 s; "
                     "--no-browser skips the browser)")
                return
            _say("could not open a browser")
        used.append("headless")
        _say("no browser here: completing the authorization headlessly by following the "
             "provider's redirect to the loopback callback")
        status = follow_authorization(url)
        _say(f"callback page answered HTTP {status}")

    tokens = client.login(store, key, port=0, open_browser=show, timeout=120.0)
    _say(f"stored tokens for {key!r}: access token {fingerprint(tokens.access_token)}, "
         f"expires {human_expiry(tokens.expires_at)}, scope {tokens.scope or '-'}, "
         f"refresh token {'yes' if tokens.refresh_token else 'no'}")
    _step(5, "Getting a token, the way scripts do")
    before = _demo_token(store, key, "valid: served from the store")
    _step(6, "Simulating expiry: the provider expires its access tokens and the stored "
             "expiry moves into the past")
    provider.expire_access_tokens()
    store.update(key, lambda t: None if t is None else t.replace(expires_at=time.time() - 1))
    expired = store.get(key)
    _say(f"stored token now {human_expiry(expired.expires_at if expired else None)}")
    _step(7, "Getting a token again: it is refreshed with the refresh token")
    after = _demo_token(store, key, "expired: refreshed, then stored")
    refreshed = provider.refresh_count
    changed = after != before
    _say(f"refreshed: {'yes' if refreshed and changed else 'NO'} "
         f"(provider refresh count {refreshed}, token changed: {'yes' if changed else 'no'})")
    current = store.get(key)
    if current is not None:
        _say(f"new expiry: {human_expiry(current.expires_at)}")
    _step(8, "Calling a protected resource with the token")
    resp = httpx2.get(provider.userinfo_endpoint, headers={"Authorization": f"Bearer {after}"},
                      timeout=10.0)
    _say(f"GET {provider.userinfo_endpoint} -> HTTP {resp.status_code} {resp.text.strip()}")
    device_ok = _demo_device(provider, client, store)
    if isinstance(store, FileStore):
        _step(10, "The store on disk")
        _say(mode_line(os.path.dirname(store.path)))
        _say(mode_line(store.path))
        if os.path.exists(store.backup_path):
            _say(mode_line(store.backup_path))
    ok = bool(refreshed) and changed and resp.status_code == 200 and device_ok
    print(f"\nDemo {'complete' if ok else 'FAILED'} ({used[0] if used else '?'} authorization).")
    return EXIT_OK if ok else EXIT_FAILURE


def _demo_device(provider: MockProvider, client: OAuthClient, store: TokenStore) -> bool:
    """Step 9: the device flow (RFC 8628), the way to log in over SSH or in a container."""
    key = "demo-device"
    _step(9, "Logging in without a browser here: the device flow (RFC 8628), as over SSH")
    provider.device_interval = 1

    def on_code(grant: DeviceAuthorization) -> None:
        show_device_code(grant, sys.stdout, qr=False)
        _say("(the demo plays the person: it enters the code on the provider's page "
             f"{grant.verification_uri} and approves)")
        page = httpx2.post(grant.verification_uri, timeout=10.0,
                           data={"user_code": grant.user_code, "action": "approve"})
        _say(f"approval page answered HTTP {page.status_code}; polling the token endpoint "
             f"every {grant.interval:g} s until the approval shows")

    tokens = client.login_device(store, key, on_code=on_code)
    saved = store.get_client(key) is not None
    _say(f"stored tokens for {key!r}: access token {fingerprint(tokens.access_token)}, "
         f"expires {human_expiry(tokens.expires_at)}, client saved: {'yes' if saved else 'no'} "
         f"(later refreshed exactly like the browser login's)")
    return saved and provider.is_access_token_active(tokens.access_token)


def cmd_demo(args: argparse.Namespace) -> int:
    """End-to-end flow against an embedded mock provider; prints each step."""
    with MockProvider(expires_in=3600) as provider, _demo_store(args) as store:
        return _run_demo(args, provider, store)
