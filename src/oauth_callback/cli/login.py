"""``oauth-callback login``: the authorization code flow with PKCE on a loopback redirect."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO
from urllib.parse import parse_qs, urlsplit

from ..browser import no_graphical_display, open_url
from ..flow import OAuthClient
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    SECRET_ENV_VAR,
    CliError,
    human_expiry,
    info,
    log,
    store_from_args,
)

if TYPE_CHECKING:
    from ..models import Tokens
    from ..storage.base import TokenStore

__all__ = ["Progress", "cmd_login", "default_key"]


class Progress:
    """A status line on stderr: a spinner with elapsed time on a TTY, one plain line otherwise."""

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._message = ""
        self._timeout: float | None = None

    def start(self, message: str, timeout: float | None = None) -> None:
        """Show ``message``; on a TTY animate it (elapsed / ``timeout`` s) until :meth:`stop`."""
        self._message = message
        self._timeout = timeout
        if not self.tty:
            limit = f" (timeout {timeout:g}s)" if timeout else ""
            print(f"{message}{limit} ...", file=self.stream, flush=True)
            return
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, name="oauth-callback-spinner",
                                        daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        started = time.monotonic()
        i = 0
        while not self._stop.wait(0.1):
            elapsed = f"{int(time.monotonic() - started)}s"
            if self._timeout:
                elapsed += f" of {self._timeout:g}s"
            frame = self.FRAMES[i % len(self.FRAMES)]
            self.stream.write(f"\r{frame} {self._message} ({elapsed}, Ctrl-C to cancel)\x1b[K")
            self.stream.flush()
            i += 1

    def stop(self) -> None:
        """Stop the animation and clear the line (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=1.0)
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def default_key(url: str) -> str:
    """The store key derived from an issuer or endpoint URL: its host, plus ``:port`` if given."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise CliError(f"cannot derive a key from {url!r}; pass --key", EXIT_USAGE)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _build_client(args: argparse.Namespace, secret: str | None) -> OAuthClient:
    try:
        if args.issuer:
            return OAuthClient.discover(
                args.issuer, args.client_id, scope=args.scope, client_secret=secret
            )
        return OAuthClient(
            args.client_id,
            client_secret=secret,
            scope=args.scope,
            authorization_endpoint=args.authorize_url,
            token_endpoint=args.token_url,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _login_summary(key: str, tokens: Tokens, store: TokenStore) -> str:
    return (
        f"Logged in: key {key!r}, expires {human_expiry(tokens.expires_at)}, "
        f"scope {tokens.scope or '-'}, refresh token {'yes' if tokens.refresh_token else 'no'} "
        f"(stored in {store.describe()})"
    )


def cmd_login(args: argparse.Namespace) -> int:
    """Run the authorization code flow with PKCE on a loopback redirect and store the tokens."""
    if args.issuer and (args.authorize_url or args.token_url):
        raise CliError("pass either --issuer or --authorize-url and --token-url", EXIT_USAGE)
    if not args.issuer and not (args.authorize_url and args.token_url):
        raise CliError("pass --issuer, or both --authorize-url and --token-url", EXIT_USAGE)
    if args.client_secret:
        log.warning("--client-secret on the command line is visible to other users of this "
                    "machine (process list, shell history); prefer $%s", SECRET_ENV_VAR)
    secret = args.client_secret or os.environ.get(SECRET_ENV_VAR) or None
    key = args.key or default_key(args.issuer or args.authorize_url)
    store = store_from_args(args)
    client = _build_client(args, secret)
    progress = Progress()

    def show(url: str) -> None:
        if args.no_browser:
            open_url(url, False)
        else:
            if not no_graphical_display():
                info("Opening the authorization page in your browser "
                      "(if none opens, run again with --no-browser) ...")
            open_url(url, True)
        redirect = parse_qs(urlsplit(url).query).get("redirect_uri", ["the loopback address"])[0]
        progress.start(f"Waiting for the authorization callback on {redirect}", args.timeout)

    try:
        tokens = client.login(store, key, port=args.port, open_browser=show,
                              timeout=args.timeout)
    finally:
        progress.stop()
    print(_login_summary(key, tokens, store))
    return EXIT_OK
